#include "part_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <nlohmann/json.hpp>
#include <rbee/narration/sanitize.hpp>

namespace fs = std::filesystem;

namespace rbee::provisioner {

void write_at(int fd, const fs::path& path, const char* data, std::size_t length,
              std::uint64_t offset) {
  for (std::size_t done = 0; done < length;) {
    const ssize_t n = ::pwrite(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_disk_error("write", path, errno);
    done += static_cast<std::size_t>(n);
  }
}

std::vector<ByteRange> merged_ranges(std::vector<ByteRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  std::vector<ByteRange> out;
  for (const auto& range : ranges) {
    if (range.end <= range.begin) continue;
    if (!out.empty() && range.begin <= out.back().end) {
      out.back().end = std::max(out.back().end, range.end);
    } else {
      out.push_back(range);
    }
  }
  return out;
}

std::string range_sidecar_json(const FileToFetch& file, std::string_view checksum,
                               const std::vector<ByteRange>& done) {
  nlohmann::json json = {{"version", 1}, {"size", file.size}, {"checksum", checksum}};
  json["done"] = nlohmann::json::array();
  for (const auto& range : done) json["done"].push_back({range.begin, range.end});
  return narration::dump_json(json);
}

namespace {

// What of a part of `part_length` bytes a download may keep: the ranges its sidecar records,
// else the prefix a single connection wrote (a part without a sidecar is always one);
// nullopt when neither can be trusted (a sidecar of another file, a part longer than the file).
std::optional<std::vector<ByteRange>> kept_ranges(const StagedFile& staged, const FileToFetch& file,
                                                  std::uint64_t part_length) {
  if (const auto sidecar = staged.read_sidecar()) {
    return parse_range_sidecar(*sidecar, file.size, expected_checksum(file));
  }
  if (part_length > file.size) return std::nullopt;
  return merged_ranges({{0, part_length}});
}

}  // namespace

std::uint64_t resumable_bytes(const StagedFile& staged, const FileToFetch& file) {
  if (!staged.has_part()) return 0;
  std::uint64_t bytes = 0;
  for (const auto& range :
       kept_ranges(staged, file, staged.part_size()).value_or(std::vector<ByteRange>{})) {
    bytes += range.end - range.begin;
  }
  return bytes;
}

ResumablePart open_resumable_part(const StagedFile& staged, const FileToFetch& file) {
  ResumablePart part{staged.open_part(), {}};
  const fs::path part_path = staged.part_path();
  const off_t length = ::lseek(part.fd.get(), 0, SEEK_END);
  if (length < 0) throw_disk_error("seek", part_path, errno);
  // An untrusted part's layout is unknown (it may be preallocated, full of holes): it starts
  // over rather than keep any of it.
  if (auto kept = kept_ranges(staged, file, static_cast<std::uint64_t>(length))) {
    part.done = std::move(*kept);
  } else if (::ftruncate(part.fd.get(), 0) != 0) {
    throw_disk_error("truncate", part_path, errno);
  }
  staged.write_sidecar(range_sidecar_json(file, expected_checksum(file), part.done));
  return part;
}

std::optional<std::vector<ByteRange>> parse_range_sidecar(std::string_view text,
                                                          std::uint64_t file_size,
                                                          std::string_view checksum) {
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  const auto version = json.find("version"), size = json.find("size"), sum = json.find("checksum"),
             done = json.find("done");
  if (version == json.end() || *version != 1 || size == json.end() || !size->is_number_unsigned() ||
      size->get<std::uint64_t>() != file_size || sum == json.end() || !sum->is_string() ||
      sum->get<std::string>() != checksum || done == json.end() || !done->is_array()) {
    return std::nullopt;
  }
  std::vector<ByteRange> ranges;
  for (const auto& pair : *done) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_unsigned() ||
        !pair[1].is_number_unsigned()) {
      return std::nullopt;
    }
    const ByteRange range{pair[0].get<std::uint64_t>(), pair[1].get<std::uint64_t>()};
    if (range.begin > range.end || range.end > file_size) return std::nullopt;
    ranges.push_back(range);
  }
  return merged_ranges(std::move(ranges));
}

PartFile::PartFile(const StagedFile& staged, std::uint64_t expected_size, FileHash& hash)
    : staged_(staged), path_(staged.part_path()), hash_(hash), fd_(staged.open_part()) {
  rehash_prefix(expected_size);
  pipeline_.emplace(hash_);
}

void PartFile::append(const char* data, std::size_t length) {
  pipeline_->update(data, length);
  write_at(fd_.get(), path_, data, length, size_);
  size_ += length;
  writeback_.advance(fd_.get(), size_);
}

void PartFile::restart() {
  if (pipeline_) pipeline_->drain();
  if (::ftruncate(fd_.get(), 0) != 0) throw_disk_error("truncate", path_, errno);
  size_ = 0;
  writeback_.reset();
  hash_.reset();
}

std::string PartFile::digest() {
  pipeline_->drain();
  return hash_.hex_digest();
}

void PartFile::rehash_prefix(std::uint64_t expected_size) {
  const off_t length = ::lseek(fd_.get(), 0, SEEK_END);
  if (length < 0) throw_disk_error("seek", path_, errno);
  if (static_cast<std::uint64_t>(length) > expected_size) {  // not a prefix of this file
    restart();
    return;
  }
  hash_file_range(fd_.get(), path_, 0, static_cast<std::uint64_t>(length), hash_);
  size_ = static_cast<std::uint64_t>(length);
}

void Writeback::start(int fd, std::uint64_t end) {
  // Advice, not a promise: a failure here only leaves the work to the fsync, which reports it.
  ::sync_file_range(fd, static_cast<off_t>(started_), static_cast<off_t>(end - started_),
                    SYNC_FILE_RANGE_WRITE);
  started_ = end;
}

std::chrono::milliseconds TimelineClock::since_start() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start_);
}

void TimelineClock::durable(const DownloadEvents& events, std::uint64_t written_back) {
  timeline_.durable = since_start();
  timeline_.written_back = written_back;
  if (events.finished) events.finished(timeline_);
}

}  // namespace rbee::provisioner
