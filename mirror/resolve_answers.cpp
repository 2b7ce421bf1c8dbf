// The resolve route: a file's bytes, from the verified file on disk or from its download while
// it grows (LiveFiles), whole or in a single range, through a bounded buffer.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>
#include <rbee/provisioner/hub_client.hpp>

#include "hub_answers.hpp"
#include "mirror_impl.hpp"

#include <rbee/catalog/repo_store.hpp>

namespace rbee::mirror {
namespace {

constexpr const char* kActor = "mirror";
constexpr auto kWaitSlice = std::chrono::milliseconds(250);

// Several ranges, or a form this does not read, are answered with the whole file (200), as
// RFC 9110 allows; a single range past the end is 416.
RangeRequest parse_single_range(const std::string& header, std::uint64_t size, ByteRange& range) {
  if (header.empty() || !header.starts_with("bytes=") || header.find(',') != std::string::npos) {
    return RangeRequest::none;
  }
  const std::string spec = header.substr(6);
  const auto dash = spec.find('-');
  if (dash == std::string::npos) return RangeRequest::none;
  auto number = [](const std::string& text, std::uint64_t& value) {
    if (text.empty() || text.size() > 19 || !std::all_of(text.begin(), text.end(), ::isdigit))
      return false;
    value = std::stoull(text);
    return true;
  };
  std::uint64_t first = 0, last = 0;
  const std::string left = spec.substr(0, dash), right = spec.substr(dash + 1);
  if (left.empty()) {  // the last N bytes
    if (!number(right, last)) return RangeRequest::none;
    if (last == 0 || size == 0) return RangeRequest::unsatisfiable;
    range = {size - std::min(last, size), size};
    return RangeRequest::satisfiable;
  }
  if (!number(left, first)) return RangeRequest::none;
  if (!right.empty() && (!number(right, last) || last < first)) return RangeRequest::none;
  if (first >= size) return RangeRequest::unsatisfiable;
  range = {first, right.empty() ? size : std::min(last + 1, size)};
  return RangeRequest::satisfiable;
}

}  // namespace

void HubMirror::Impl::resolve(const Request& request, Response& response) {
  const auto id = model_id(request, response);
  if (!id) return;
  const auto split = split_revision(request.matches[3].str());
  if (!split || split->second.empty()) {
    return send_hub_error(response, 404, "EntryNotFound", "no file path given");
  }
  // Named, not a structured binding: clang 14 (the ASan build) cannot capture one in a lambda.
  const std::string& revision = split->first;
  const std::string& path = split->second;
  try {
    catalog::validate_repo_path(path);
  } catch (const catalog::CatalogError&) {
    return send_hub_error(response, 404, "EntryNotFound", "not a valid path in a repo");
  }
  std::string pull_job;  // the pull of this very file, when the listing had to be pulled
  const auto snapshot =
      find_repo(request, *id, revision, id->str() + ":" + path, response, &pull_job);
  if (!snapshot || !allowed(*id, *snapshot, response)) return;
  const auto& siblings = snapshot->listing.siblings;
  const auto file = std::find_if(siblings.begin(), siblings.end(),
                                 [&](const Sibling& s) { return s.path == path; });
  if (file == siblings.end()) {
    return send_hub_error(response, 404, "EntryNotFound",
                          fmt::format("{} has no file '{}' at commit {}", id->str(),
                                      narration::sanitize(path, 300), snapshot->listing.commit));
  }
  const Sibling& sibling = *file;
  // The file's headers go only with an answer about the file (not with a 404 for it).
  const auto set_file_headers = [&] {
    response.set_header("X-Repo-Commit", snapshot->listing.commit);
    response.set_header("ETag", etag_of(sibling));
    response.set_header("X-Linked-Etag", etag_of(sibling));
    response.set_header("X-Linked-Size", std::to_string(sibling.size));
    response.set_header("Accept-Ranges", "bytes");
  };

  ByteRange range{0, sibling.size};
  const auto wanted = parse_single_range(request.get_header_value("Range"), sibling.size, range);
  if (wanted == RangeRequest::unsatisfiable) {
    set_file_headers();
    response.set_header("Content-Range", fmt::format("bytes */{}", sibling.size));
    return send_hub_error(response, 416, "", "Requested range not satisfiable");
  }
  if (request.method == "HEAD") {
    // The header fields only, and the answer a GET would get: a file this hive lacks is 404
    // when it may not pull it, else it is pulled now, so the GET that follows finds it under
    // way. (Clients decide on HEAD: a 200 for a file that GET refuses breaks them.)
    if (!has_file(*id, *snapshot, sibling)) {
      if (!may_pull(request)) return send_not_cached(response, *id, sibling);
      if (pull_job.empty() && !running_model_pull(*id)) {
        std::string job_id;
        Response ignored;
        start_pull(id->str() + ":" + path, snapshot->listing.commit, job_id, ignored);
      }
    }
    set_file_headers();
    if (wanted == RangeRequest::satisfiable) set_partial(response, range, sibling.size);
    response.set_content_provider(range.end - range.begin, "application/octet-stream",
                                  [](std::size_t, std::size_t, httplib::DataSink&) {
                                    return false;  // never called for HEAD
                                  });
    return;
  }
  auto source = open_source(request, *id, *snapshot, sibling, pull_job, response);
  if (!source) return;
  set_file_headers();
  if (wanted == RangeRequest::satisfiable) set_partial(response, range, sibling.size);
  send_file(response, std::move(*source), *id, sibling, range);
}

void HubMirror::Impl::set_partial(Response& response, const ByteRange& range, std::uint64_t size) {
  response.status = 206;
  response.set_header("Content-Range",
                      fmt::format("bytes {}-{}/{}", range.begin, range.end - 1, size));
}

// The verified file's blob, when the catalog says the commit has it with the listed size.
catalog::UniqueFd HubMirror::Impl::open_verified(const catalog::ModelId& id,
                                                 const RepoSnapshot& snapshot,
                                                 const Sibling& sibling) {
  try {
    const auto verified = repos_.verified_files(id);
    const auto* file = verified ? verified->find(snapshot.listing.commit, sibling.path) : nullptr;
    if (!file || file->size != sibling.size) return {};
    const auto folder = catalog_.open_model_dir(id, false);
    if (!folder) return {};
    auto fd = catalog::open_blob(*folder, file->blob);
    struct stat info {};
    if (!fd || ::fstat(fd.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
        static_cast<std::uint64_t>(info.st_size) != sibling.size) {
      return {};
    }
    return fd;
  } catch (const std::exception&) {
    return {};  // a symlink on the way, an unreadable entry: not a file to serve
  }
}

void HubMirror::Impl::send_not_cached(Response& response, const catalog::ModelId& id,
                                      const Sibling& sibling) {
  send_hub_error(response, 404, "EntryNotFound",
                 fmt::format("{}/{} is listed but not in this hive's cache, and {}", id.str(),
                             sibling.path, why_no_pull()));
}

std::shared_ptr<const LiveFile> HubMirror::Impl::find_growing(const catalog::ModelId& id,
                                                              const RepoSnapshot& snapshot,
                                                              const Sibling& sibling) const {
  auto live = provisioner_.live_files().find({id.str(), snapshot.listing.commit, sibling.path});
  if (live &&
      (live->size() != sibling.size || live->progress().state == LiveFile::State::abandoned)) {
    return nullptr;
  }
  return live;
}

bool HubMirror::Impl::has_file(const catalog::ModelId& id, const RepoSnapshot& snapshot,
                               const Sibling& sibling) {
  return find_growing(id, snapshot, sibling) || open_verified(id, snapshot, sibling);
}

// Sends `range` of the file from `source` through a buffer of read_buffer_bytes (memory per
// response is bounded, whatever the file's size). A growing file is sent as its committed
// prefix grows; if its download is abandoned (a checksum mismatch, a failure) the response is
// cut short, so the requester never completes a wrong file.
void HubMirror::Impl::send_file(Response& response, FileSource source, const catalog::ModelId& id,
                                const Sibling& sibling, ByteRange range) {
  struct Transfer {
    FileSource source;
    std::vector<char> buffer;
    bool reached_end = false;
  };
  auto transfer = std::make_shared<Transfer>(Transfer{std::move(source), {}, false});
  const std::uint64_t begin = range.begin;
  const std::uint64_t end = range.end;
  response.set_content_provider(
      end - begin, "application/octet-stream",
      [this, transfer, begin, end](std::size_t offset, std::size_t, httplib::DataSink& sink) {
        const std::uint64_t at = begin + offset;
        std::uint64_t readable = end;
        if (transfer->source.growing) {
          const auto progress = transfer->source.growing->wait_readable(at, kWaitSlice);
          if (progress.state == LiveFile::State::abandoned || stopping_) return false;
          readable = std::min(end, progress.readable);
          if (readable <= at) return true;  // called again: waits once more
        }
        if (transfer->buffer.empty()) {
          transfer->buffer.resize(
              std::min<std::uint64_t>(settings_.read_buffer_bytes, end - begin));
        }
        const std::size_t want = std::min<std::uint64_t>(transfer->buffer.size(), readable - at);
        ssize_t n = -1;
        do {
          n = ::pread(transfer->source.fd(), transfer->buffer.data(), want, static_cast<off_t>(at));
        } while (n < 0 && errno == EINTR);
        if (n <= 0) return false;  // the file shrank or cannot be read: cut the response
        if (!sink.write(transfer->buffer.data(), static_cast<std::size_t>(n))) return false;
        bytes_served_ += static_cast<std::uint64_t>(n);
        if (at + static_cast<std::uint64_t>(n) == end) transfer->reached_end = true;
        return true;
      },
      [this, transfer, id, path = sibling.path, size = sibling.size, end](bool success) {
        if (!success || !transfer->reached_end || end != size) return;
        {
          std::lock_guard lock(stats_mutex_);
          ++stats_.files_served;
        }
        narrator_.emit({kActor, "mirror_file_served", id.str(),
                        fmt::format("Sent the end of {}/{} ({} bytes) to a peer; {} bytes served "
                                    "in all",
                                    id.str(), path, size, bytes_served_.load()),
                        "", narration::Level::info, 0, std::nullopt});
      });
}

}  // namespace rbee::mirror
