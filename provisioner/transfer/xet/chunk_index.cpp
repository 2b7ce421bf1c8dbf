#include "xet/chunk_index.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <rbee/catalog/model_id.hpp>
#include <rbee/narration/sanitize.hpp>

#include "staging.hpp"

namespace fs = std::filesystem;

namespace rbee::provisioner::xet {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kFolder = ".rbee/xet-chunks";
constexpr std::size_t kMaxRecordBytes = 64 << 20;

std::string record_name(const std::string& repo_path) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_Digest(repo_path.data(), repo_path.size(), digest, &length, EVP_sha256(), nullptr);
  std::string name;
  for (unsigned i = 0; i < 16; ++i) name += fmt::format("{:02x}", digest[i]);
  return name + ".json";
}

std::int64_t mtime_ns(const struct stat& info) {
  return static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 + info.st_mtim.tv_nsec;
}

std::string record_json(const std::string& repo_path, std::uint64_t size, std::int64_t mtime,
                        const std::vector<ChunkSpan>& spans) {
  Json json = {{"version", 1}, {"path", repo_path}, {"size", size}, {"mtime_ns", mtime}};
  Json& list = json["spans"] = Json::array();
  for (const auto& span : spans) {
    list.push_back({span.xorb, span.chunks.begin, span.chunks.end, span.offset, span.length,
                    span.chunk_lengths});
  }
  return narration::dump_json(json);
}

// A span as the record holds it; nullopt when anything is off.
std::optional<ChunkSpan> parse_span(const Json& entry, std::uint64_t file_size) {
  if (!entry.is_array() || entry.size() != 6 || !entry[0].is_string()) return std::nullopt;
  for (int i = 1; i <= 4; ++i) {
    if (!entry[i].is_number_unsigned()) return std::nullopt;
  }
  ChunkSpan span;
  span.xorb = entry[0].get<std::string>();
  const auto begin = entry[1].get<std::uint64_t>(), end = entry[2].get<std::uint64_t>();
  span.offset = entry[3].get<std::uint64_t>();
  span.length = entry[4].get<std::uint64_t>();
  if (span.xorb.size() != 64 || begin >= end || end > UINT32_MAX || span.length == 0 ||
      span.offset > file_size || span.length > file_size - span.offset || !entry[5].is_array()) {
    return std::nullopt;
  }
  span.chunks = {static_cast<std::uint32_t>(begin), static_cast<std::uint32_t>(end)};
  if (!entry[5].empty()) {
    if (entry[5].size() != end - begin) return std::nullopt;
    std::uint64_t sum = 0;
    for (const auto& length : entry[5]) {
      if (!length.is_number_unsigned() || length.get<std::uint64_t>() > UINT32_MAX)
        return std::nullopt;
      span.chunk_lengths.push_back(length.get<std::uint32_t>());
      sum += span.chunk_lengths.back();
    }
    if (sum != span.length) return std::nullopt;
  }
  return span;
}

}  // namespace

ChunkIndex::ChunkIndex(fs::path models_root) : root_(std::move(models_root)) {}

std::optional<ReuseSource> ChunkIndex::find(const std::string& xorb, const ChunkRange& chunks) {
  std::lock_guard lock(mutex_);
  load_locked();
  const auto [first, last] = by_xorb_.equal_range(xorb);
  for (auto it = first; it != last; ++it) {
    const Record& record = *it->second;
    for (const auto& span : record.spans) {
      if (span.xorb != xorb || !span.chunks.contains(chunks)) continue;
      ReuseSource source{record.model_dir, record.repo_path, span.offset,       span.length,
                         record.size,      record.mtime_ns,  span.chunk_lengths};
      if (!(span.chunks == chunks)) {
        if (span.chunk_lengths.empty()) continue;
        const auto at = span.chunk_lengths.begin();
        for (auto i = at; i != at + (chunks.begin - span.chunks.begin); ++i) source.offset += *i;
        source.length = 0;
        source.chunk_lengths.assign(at + (chunks.begin - span.chunks.begin),
                                    at + (chunks.end - span.chunks.begin));
        for (const auto length : source.chunk_lengths) source.length += length;
      }
      // Only a file still as it was recorded (size and mtime) is worth opening.
      struct stat info {};
      const fs::path file = record.model_dir / record.repo_path;
      if (::lstat(file.c_str(), &info) != 0 || !S_ISREG(info.st_mode) ||
          static_cast<std::uint64_t>(info.st_size) != record.size ||
          mtime_ns(info) != record.mtime_ns) {
        break;
      }
      return source;
    }
  }
  return std::nullopt;
}

std::optional<std::string> ChunkIndex::record(const catalog::Directory& model,
                                              const std::string& repo_path, int fd,
                                              std::vector<ChunkSpan> spans) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) return std::string("cannot stat the verified file");
  auto record = std::make_shared<Record>();
  record->model_dir = model.path();
  record->repo_path = repo_path;
  record->size = static_cast<std::uint64_t>(info.st_size);
  record->mtime_ns = mtime_ns(info);
  record->spans = std::move(spans);
  try {
    const auto folder = model.descend(kFolder, true);
    folder->replace_file(record_name(repo_path),
                         record_json(repo_path, record->size, record->mtime_ns, record->spans),
                         *folder);
  } catch (const std::exception& error) {
    return std::string(error.what());
  }
  std::lock_guard lock(mutex_);
  if (loaded_) add_locked(std::move(record));
  return std::nullopt;
}

void ChunkIndex::add_locked(std::shared_ptr<const Record> record) {
  const fs::path key = record->model_dir / record->repo_path;
  if (const auto old = by_file_.find(key); old != by_file_.end()) {
    std::erase_if(by_xorb_, [&](const auto& entry) { return entry.second == old->second; });
  }
  by_file_[key] = record;
  std::vector<std::string> xorbs;
  for (const auto& span : record->spans) xorbs.push_back(span.xorb);
  std::sort(xorbs.begin(), xorbs.end());
  xorbs.erase(std::unique(xorbs.begin(), xorbs.end()), xorbs.end());
  for (auto& xorb : xorbs) by_xorb_.emplace(std::move(xorb), record);
}

// Every model's records, once: <root>/models--<org>--<name>/.rbee/xet-chunks/*.json.
void ChunkIndex::load_locked() {
  if (loaded_) return;
  loaded_ = true;
  std::error_code ec;
  for (const auto& model : fs::directory_iterator(root_, ec)) {
    if (model.is_directory(ec) && !model.is_symlink(ec) &&
        model.path().filename().string().starts_with(catalog::kRepoFolderPrefix)) {
      load_model_records(model.path());
    }
  }
}

void ChunkIndex::load_model_records(const fs::path& model_dir) {
  try {
    const auto model = catalog::Directory::open(model_dir, false);
    const auto folder = model.descend(kFolder, false);
    if (!folder) return;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(folder->path(), ec)) {
      const std::string name = entry.path().filename().string();
      if (!name.ends_with(".json")) continue;
      const auto text = folder->read_file(name, kMaxRecordBytes);
      if (!text) continue;
      const Json json = Json::parse(*text, nullptr, false);
      if (!json.is_object() || json.value("version", 0) != 1 || !json["path"].is_string() ||
          !json["size"].is_number_unsigned() || !json["mtime_ns"].is_number_integer() ||
          !json["spans"].is_array()) {
        continue;
      }
      auto record = std::make_shared<Record>();
      record->model_dir = model_dir;
      record->repo_path = json["path"].get<std::string>();
      try {
        catalog::validate_repo_path(record->repo_path);
      } catch (const std::exception&) {
        continue;  // never a path outside the model
      }
      if (record_name(record->repo_path) != name) continue;
      record->size = json["size"].get<std::uint64_t>();
      record->mtime_ns = json["mtime_ns"].get<std::int64_t>();
      bool valid = true;
      for (const auto& entry_json : json["spans"]) {
        auto span = parse_span(entry_json, record->size);
        if (!span) {
          valid = false;
          break;
        }
        record->spans.push_back(std::move(*span));
      }
      if (valid) add_locked(std::move(record));
    }
  } catch (const std::exception&) {
    // An unreadable model folder only means no reuse from it.
  }
}

}  // namespace rbee::provisioner::xet
