// How one file's bytes arrive: the whole story of a file's download, and the one way in
// (FileDownloader::fetch) for the model's story above.
//
// A file is fetched one of three ways, chosen in this order:
//
//  1. Xet (xet/xet_download.hpp), when the Hub says the file is in its chunk store (an
//     X-Xet-Hash on the resolve) and the policy allows it: chunks some file on this machine
//     already holds are copied instead of fetched, and the rest come from the CAS over parallel
//     connections. The Hub's resolve bridge serves whole files only (and refuses the largest),
//     so Xet goes first; a CAS that cannot be reached hands the file to the next ways.
//  2. Ranges (ranged_download.hpp), for a file of at least 2 × min_range_bytes, or any file
//     whose part has a sidecar (a ranged or Xet part to resume, whatever the policy says now):
//     several connections, each a byte range, the count found by the adaptive controller. A
//     server that answers 200 to a Range request gets the last way.
//  3. One connection (below), for small files and servers without ranges: one GET of the rest
//     of the file appended to the part, resumed with `Range: bytes=<part size>-`.
//
// Every way writes into the same part (part_file.hpp), hashes while the bytes arrive and
// publishes the file as its blob only once its checksum matches; a mismatch throws the part
// away and the file is fetched once more from zero (for Xet: without copying from disk). A part
// stays on every other failure, so the next attempt, or the next job, resumes it.
#include "rbee/provisioner/file_downloader.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <rbee/catalog/repo_store.hpp>
#include <rbee/narration/sanitize.hpp>

#include "file_hash.hpp"
#include "http_connection.hpp"
#include "part_file.hpp"
#include "ranged_download.hpp"
#include "rbee/provisioner/content_range.hpp"
#include "rbee/provisioner/retry.hpp"
#include "staging.hpp"
#include "xet/chunk_index.hpp"
#include "xet/xet_download.hpp"

namespace fs = std::filesystem;

namespace rbee::provisioner {
namespace {

constexpr std::size_t kWriteBatch = 1 << 20;  // one write, and one hash block, per MiB

// One GET of the rest of the file into the part. Returns normally when the body ended; throws
// HubError for HTTP and transport failures.
void transfer(const HubClient& hub, ConnectionPool& connections, const ResolvedFile& source,
              const FileToFetch& file, const DownloadPolicy& policy, PartFile& part,
              const std::stop_token& stop, const DownloadEvents& events) {
  const std::uint64_t start = part.size();
  HttpRequest request;
  request.url = source.url;
  request.headers = hub.headers_for(source.send_token);
  if (start > 0) request.headers.emplace("Range", fmt::format("bytes={}-", start));
  request.stall_timeout = policy.stall_timeout;
  request.stall_min_bytes = policy.stall_min_bytes;

  bool overflow = false;
  std::vector<char> batch;
  batch.reserve(kWriteBatch);
  auto flush = [&] {
    part.append(batch.data(), batch.size());
    batch.clear();
    if (events.progress) events.progress(part.size());
    if (events.prefix_committed) events.prefix_committed(part.fd(), part.size());
  };
  request.on_head = [&](const HttpResponseHead& head) {
    if (head.status == 206)
      return content_range_matches(head.header("Content-Range"), start, std::nullopt, file.size);
    if (head.status == 200 && start > 0) part.restart();  // the server ignored Range: start over
    return head.status == 200;
  };
  request.on_body = [&](const char* data, std::size_t length) {
    if (part.size() + batch.size() + length > file.size) {
      overflow = true;  // more bytes than the listing promised: never keep them
      return false;
    }
    batch.insert(batch.end(), data, data + length);
    if (batch.size() >= kWriteBatch) flush();
    return true;
  };
  const HttpResult result = connections.take(source.url)->perform(request, stop);
  if (!batch.empty()) flush();  // bytes that arrived before a failure are a valid prefix
  if (result.outcome == HttpOutcome::cancelled || stop.stop_requested()) {
    throw DownloadCancelled();
  }

  const std::string what = file.path;
  const int status = result.head.status;
  const std::string content_range = result.head.header("Content-Range");
  if (overflow) {
    part.restart();
    throw HubError(HubErrorKind::protocol,
                   fmt::format("{}: the server sent more than {} bytes", what, file.size));
  }
  if (is_redirect(status)) {  // the caller resolves the redirect by hand (never followed blind)
    throw HubError(HubErrorKind::protocol, fmt::format("{}: redirected ({})", what, status),
                   status);
  }
  if (status == 206 && !content_range_matches(content_range, start, std::nullopt, file.size)) {
    // The header is outside text: sanitised, and bounded, before it reaches any message.
    throw HubError(
        HubErrorKind::protocol,
        fmt::format("{}: asked for bytes {}-{} of {}, the server answered '{}'", what, start,
                    file.size - 1, file.size, narration::sanitize(content_range, 100)));
  }
  if (status == 416) {
    // The part is stale (longer than the server's file): start over.
    part.restart();
    throw HubError(HubErrorKind::server_error, fmt::format("{}: range not satisfiable (416)", what),
                   416);
  }
  if (status != 0 && status != 200 && status != 206) {
    throw hub_error_for(status, result.head.header("X-Error-Code"), what,
                        result.head.header("Retry-After"),
                        source.send_token && !hub.settings().token.empty());
  }
  if (result.outcome == HttpOutcome::stalled) {
    throw HubError(
        HubErrorKind::network,
        fmt::format("{}: stalled (under {} bytes in {} ms) at {} of {} bytes", what,
                    policy.stall_min_bytes, policy.stall_timeout.count(), part.size(), file.size));
  }
  if (result.outcome != HttpOutcome::complete || part.size() < file.size) {
    throw HubError(
        HubErrorKind::network,
        fmt::format(
            "{}: connection lost at {} of {} bytes ({})", what, part.size(), file.size,
            result.outcome == HttpOutcome::complete ? "the body ended early" : result.error));
  }
}

}  // namespace

FileDownloader::FileDownloader(const HubClient& hub, DownloadPolicy policy,
                               xet::ChunkIndex* chunk_index)
    : hub_(hub),
      policy_(policy),
      chunk_index_(chunk_index),
      xet_tokens_(std::make_unique<xet::XetTokens>(hub)),
      connections_(hub) {}

FileDownloader::~FileDownloader() = default;

void FileDownloader::fetch(const catalog::ModelId& repo, const std::string& commit,
                           const FileToFetch& file, const catalog::Directory& model,
                           std::stop_token stop, const DownloadEvents& events,
                           ConnectionBudget* extra_connections) const {
  const StagedFile staged(model, file);
  if (!staged.has_part()) staged.remove_sidecar();
  std::optional<ResolvedFile> resolved;
  if (fetch_with_xet(repo, commit, file, model, staged, stop, events, extra_connections, resolved))
    return;
  if (wants_ranges(policy_, file, staged)) {
    for (int attempt = 1;; ++attempt) {
      std::string mismatch;
      const auto outcome = fetch_in_ranges(hub_, policy_, repo, commit, file, staged, stop, events,
                                           extra_connections, mismatch);
      if (outcome == RangedOutcome::verified) return;
      if (outcome == RangedOutcome::ranges_refused) {
        if (events.retrying) {
          events.retrying(0, file.path + ": the server ignores Range; one connection from zero",
                          {});
        }
        break;
      }
      if (events.discarded) events.discarded(mismatch);
      if (attempt == 2) throw DownloadError(DownloadErrorKind::hash_mismatch, mismatch);
      if (events.retrying) events.retrying(1, mismatch + "; downloading again from zero", {});
    }
  }
  fetch_over_one_connection(repo, commit, file, staged, stop, events, std::move(resolved));
}

// Xet first for the files the Hub keeps there (its X-Xet-Hash on the resolve): the bridge
// sends whole files only and refuses the largest. A CAS that cannot be reached leaves the
// bridge as the way; a checksum mismatch is tried once more without copying from disk.
bool FileDownloader::fetch_with_xet(const catalog::ModelId& repo, const std::string& commit,
                                    const FileToFetch& file, const catalog::Directory& model,
                                    const StagedFile& staged, const std::stop_token& stop,
                                    const DownloadEvents& events,
                                    ConnectionBudget* extra_connections,
                                    std::optional<ResolvedFile>& resolved) const {
  if (!policy_.xet || file.sha256.empty() || file.size == 0) return false;
  try {
    resolved = hub_.resolve(repo, commit, file.path, &connections_, stop);
  } catch (const HubError&) {
    if (stop.stop_requested()) throw DownloadCancelled();
    return false;  // the bridge path resolves again, with its retries
  }
  if (resolved->xet_hash.empty()) return false;
  xet::ChunkIndex* reuse = chunk_index_;
  for (int attempt = 1;; ++attempt) {
    std::string reason;
    const auto outcome = xet::fetch_with_xet(hub_, *xet_tokens_, reuse, policy_, repo, commit,
                                             {file, resolved->xet_hash}, model, staged, stop,
                                             events, extra_connections, reason);
    if (outcome == xet::XetOutcome::verified) return true;
    if (outcome == xet::XetOutcome::cas_unreachable) {
      if (events.retrying) {
        events.retrying(
            0, fmt::format("{}: {}; downloading through the Hub's bridge", file.path, reason), {});
      }
      return false;
    }
    if (events.discarded) events.discarded(reason);
    if (attempt == 2) throw DownloadError(DownloadErrorKind::hash_mismatch, reason);
    if (events.retrying) {
      events.retrying(1, reason + "; fetching every chunk again, none copied from disk", {});
    }
    reuse = nullptr;
  }
}

void FileDownloader::fetch_over_one_connection(const catalog::ModelId& repo,
                                               const std::string& commit, const FileToFetch& file,
                                               const StagedFile& staged,
                                               const std::stop_token& stop,
                                               const DownloadEvents& events,
                                               std::optional<ResolvedFile> source) const {
  TimelineClock timeline;
  FileHash hash(file);
  PartFile part(staged, file.size, hash);
  if (events.progress) events.progress(part.size());
  if (events.prefix_committed) events.prefix_committed(part.fd(), part.size());

  // A regular file is served by the Hub itself: GET its resolve URL at once, skipping the HEAD
  // that finds an LFS file's CDN (a round trip per file). Redirected instead (a renamed repo,
  // a Hub that sends even small files to a CDN), it is resolved like an LFS file.
  bool must_resolve = !file.sha256.empty();
  int failures = 0;
  int url_refreshes = 0;
  bool retried_mismatch = false;
  for (;;) {
    if (stop.stop_requested()) throw DownloadCancelled();
    if (part.size() == file.size) {
      timeline.received();
      const std::string actual = part.digest();
      timeline.hashed();
      if (actual == hash.expected()) {
        part.publish();
        return timeline.durable(events, part.written_back());
      }
      part.restart();
      const std::string reason = fmt::format("{} mismatch for {}: expected {}, got {}",
                                             hash.algorithm(), file.path, hash.expected(), actual);
      if (events.discarded) events.discarded(reason);
      if (retried_mismatch) throw DownloadError(DownloadErrorKind::hash_mismatch, reason);
      retried_mismatch = true;
      if (events.retrying) events.retrying(1, reason + "; downloading again from zero", {});
      continue;
    }
    const std::uint64_t before = part.size();
    try {
      if (!source && must_resolve) {
        source = hub_.resolve(repo, commit, file.path, &connections_, stop);
      }
      if (!source) source = ResolvedFile{hub_.resolve_url(repo, commit, file.path), true, "", ""};
      transfer(hub_, connections_, *source, file, policy_, part, stop, events);
    } catch (const HubError& error) {
      if (stop.stop_requested()) throw DownloadCancelled();
      if (is_redirect(error.status()) && !must_resolve) {
        must_resolve = true;
        source.reset();
        continue;
      }
      if (part.size() > before) failures = 0;  // bytes flowed: this is a new run of failures
      const bool from_cdn = source && !source->send_token;
      if (error.kind() == HubErrorKind::forbidden && from_cdn && url_refreshes < 3) {
        ++url_refreshes;  // a signed CDN URL expired: resolve a fresh one and go on
        source.reset();
        if (events.retrying)
          events.retrying(0, std::string(error.what()) + "; refreshing the URL", {});
        continue;
      }
      const auto delay = retry_delay_or_throw(policy_, file.path, error, failures);
      if (events.retrying) events.retrying(failures, error.what(), delay);
      if (!sleep_unless_stopped(delay, stop)) throw DownloadCancelled();
    }
  }
}

std::string stored_path(const FileToFetch& file) {
  return fmt::format("{}/{}", catalog::kBlobsFolder,
                     file.sha256.empty() ? file.git_sha1 : file.sha256);
}

bool verify_on_disk(const catalog::Directory& model, const FileToFetch& file) {
  try {
    const std::string blob = stored_path(file);
    const auto [parent, name] = split_parent(blob);
    const auto folder = model.descend(parent, false);
    if (!folder) return false;
    const catalog::UniqueFd fd = folder->open_file(name, O_RDONLY);
    struct stat info {};
    if (!fd || ::fstat(fd.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
        static_cast<std::uint64_t>(info.st_size) != file.size) {
      return false;
    }
    FileHash hash(file);
    hash_file_range(fd.get(), folder->path() / name, 0, file.size, hash);
    return hash.hex_digest() == hash.expected();
  } catch (const std::exception&) {
    return false;  // unreadable, or a symlink: not verified, so it is downloaded (and replaced)
  }
}

std::shared_ptr<xet::ChunkIndex> open_chunk_index(const fs::path& models_root) {
  return std::make_shared<xet::ChunkIndex>(models_root);
}

std::uint64_t part_size_on_disk(const catalog::Directory& model, const FileToFetch& file,
                                bool adopt_legacy_part) {
  const StagedFile staged(model, file);
  if (adopt_legacy_part) staged.adopt_legacy_part();
  return staged.part_size();
}

std::uint64_t resumable_bytes(const catalog::Directory& model, const FileToFetch& file) {
  return resumable_bytes(StagedFile(model, file), file);
}

}  // namespace rbee::provisioner
