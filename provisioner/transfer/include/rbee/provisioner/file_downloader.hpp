#pragma once
// FileDownloader: one file from the Hub onto disk, verified, resumable, in constant memory.
//
// Bytes stream into a part file in the model's working folder (.rbee/, see staging.hpp) and
// through the file's hash in the same pass; the part is published as the file's blob
// (stored_path) only when size and hash match. An existing part is resumed with
// `Range: bytes=N-` after rehashing its prefix (cheaper than it sounds: ~2 GB/s with SHA-NI, and
// it needs no hash state on disk that could disagree with the bytes).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include <rbee/catalog/directory.hpp>

#include "rbee/provisioner/connection_budget.hpp"
#include "rbee/provisioner/connection_pool.hpp"
#include "rbee/provisioner/hub_client.hpp"

namespace rbee::provisioner {

struct FileToFetch {
  std::string path;  // in the repo
  std::uint64_t size = 0;
  std::string sha256;    // LFS files: the expected SHA-256
  std::string git_sha1;  // regular files: the expected git blob SHA-1
};

// Where the verified file lives in the model folder: its blob, "blobs/<sha256 or git sha1>",
// named as the Hub's ETag names it (DESIGN §16). The model's story links it into a snapshot.
std::string stored_path(const FileToFetch& file);

struct DownloadPolicy {
  int max_attempts = 6;  // consecutive failed attempts without a byte of progress
  std::chrono::milliseconds backoff_base{500};
  std::chrono::milliseconds backoff_max{std::chrono::seconds(30)};
  // A connection that delivers fewer than stall_min_bytes in stall_timeout is dropped and the
  // download resumed; one that delivers nothing at all times out after stall_timeout.
  std::chrono::milliseconds stall_timeout{std::chrono::seconds(30)};
  std::uint64_t stall_min_bytes = 16 * 1024;
  // Files of at least 2 × min_range_bytes are fetched over up to `connections` connections,
  // in byte ranges; 1 turns that off. A ceiling: the download finds its own count below it.
  int connections = 32;
  // False: exactly `connections` per large file, never adapted (for measurements, and for
  // operators who know their server).
  bool adaptive_connections = true;
  std::uint64_t min_range_bytes = 16ULL << 20;
  // Files the Hub keeps in Xet storage are fetched from its CAS (DESIGN §15), copying chunks
  // already on disk; false: always through the resolve bridge (--xet=off).
  bool xet = true;
};

struct ByteRange {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;  // one past the last byte
  bool operator==(const ByteRange&) const = default;
};

// The last steps of one file, from its first request: when its last byte arrived, when it was
// all hashed, and when it was durable and published, and how much of it the kernel had started
// writing back while it downloaded (DESIGN §8: durable at the speed of non-durable).
struct FileTimeline {
  std::chrono::milliseconds received{};
  std::chrono::milliseconds hashed{};
  std::chrono::milliseconds durable{};
  std::uint64_t written_back = 0;
};

struct DownloadEvents {
  std::function<void(std::uint64_t bytes_done)> progress;  // bytes of this file on disk so far
  std::function<void(int attempt, const std::string& reason, std::chrono::milliseconds delay)>
      retrying;
  // A ranged download found its connection count (see adaptive_connections.hpp), and why.
  std::function<void(int connections, const std::string& reason)> connections_settled;
  // The first `prefix` bytes of the file are on disk in the part `part_fd` and hashed, reported
  // as the prefix grows (LiveFiles, for readers that stream a file while it downloads).
  std::function<void(int part_fd, std::uint64_t prefix)> prefix_committed;
  // A ranged download's byte ranges on disk in `part_fd` (merged, sorted), not yet verified,
  // reported every moment; readers may be sent them, never the file's last byte before it
  // verified.
  std::function<void(int part_fd, const std::vector<ByteRange>& written)> ranges_written;
  // What was reported so far is not this file's (a checksum mismatch): it starts over.
  std::function<void(const std::string& reason)> discarded;
  // A Xet download copied `bytes` from files already on disk instead of fetching them; called
  // before the progress report that first counts them.
  std::function<void(std::uint64_t bytes)> reused;
  // The file is verified and published; how its last steps went.
  std::function<void(const FileTimeline& timeline)> finished;
};

enum class DownloadErrorKind { hash_mismatch, disk, gave_up };

class DownloadError : public std::runtime_error {
 public:
  DownloadError(DownloadErrorKind kind, const std::string& message, int error_number = 0)
      : std::runtime_error(message), kind_(kind), error_number_(error_number) {}
  DownloadErrorKind kind() const { return kind_; }
  int error_number() const { return error_number_; }  // the errno of a disk error, or 0

 private:
  DownloadErrorKind kind_;
  int error_number_;
};

// Thrown when the stop token ends a download; the part file stays for resume.
class DownloadCancelled : public std::runtime_error {
 public:
  DownloadCancelled() : std::runtime_error("download cancelled") {}
};

// True when the model folder holds exactly `file` as its blob (size and checksum), read once
// from disk, never through a symlink. For files whose catalog record was lost (the hive died
// between the publish and the catalog write) and blobs another tool wrote (adoption).
bool verify_on_disk(const catalog::Directory& model, const FileToFetch& file);

class StagedFile;  // the part and sidecar of one file (internal)
namespace xet {
class ChunkIndex;  // which xorb chunks this machine's files hold (internal)
class XetTokens;
}  // namespace xet

// Which Xet chunks the files under `models_root` hold (DESIGN §15): one per cache, shared by
// every job, so a file copies the chunks any earlier download brought instead of fetching them.
std::shared_ptr<xet::ChunkIndex> open_chunk_index(const std::filesystem::path& models_root);

// What a file's part holds between attempts, for the model's story to plan with (disk space,
// "Resuming …"). The part is the transfer floor's; these only look at it.
//
// The size of the part of `file` in `model` (0 without one). With `adopt_legacy_part`, a part an
// older hive kept beside the file ("<path>.part") becomes this file's part first; the caller
// passes false when the repo has a file of that name.
std::uint64_t part_size_on_disk(const catalog::Directory& model, const FileToFetch& file,
                                bool adopt_legacy_part);
// The bytes a download of `file` would keep from its part, without changing anything: 0 when
// there is no usable part.
std::uint64_t resumable_bytes(const catalog::Directory& model, const FileToFetch& file);

// Thread-safe; one call per file, any number at once. Large files go over several connections
// in byte ranges (see ranged_download.hpp); a server that ignores Range gets one connection.
class FileDownloader {
 public:
  // `chunk_index`: where Xet downloads find chunks to copy instead of fetching (null: none).
  FileDownloader(const HubClient& hub, DownloadPolicy policy,
                 xet::ChunkIndex* chunk_index = nullptr);
  ~FileDownloader();

  // Blocks until `model` holds the verified file as its blob (stored_path). Throws HubError (not
  // retryable, or retries exhausted), DownloadError, or DownloadCancelled within moments of
  // `stop`.
  // The caller holds one connection for the file; a ranged download opens more while
  // `extra_connections` allows (null: up to DownloadPolicy::connections, unbudgeted).
  void fetch(const catalog::ModelId& repo, const std::string& commit, const FileToFetch& file,
             const catalog::Directory& model, std::stop_token stop, const DownloadEvents& events,
             ConnectionBudget* extra_connections = nullptr) const;

 private:
  void fetch_over_one_connection(const catalog::ModelId& repo, const std::string& commit,
                                 const FileToFetch& file, const StagedFile& staged,
                                 const std::stop_token& stop, const DownloadEvents& events,
                                 std::optional<ResolvedFile> source) const;

  // Fetches through Xet when the Hub says the file is there; false when the bridge should
  // (then `resolved` holds the resolve it made, for the bridge to use).
  bool fetch_with_xet(const catalog::ModelId& repo, const std::string& commit,
                      const FileToFetch& file, const catalog::Directory& model,
                      const StagedFile& staged, const std::stop_token& stop,
                      const DownloadEvents& events, ConnectionBudget* extra_connections,
                      std::optional<ResolvedFile>& resolved) const;

  const HubClient& hub_;
  DownloadPolicy policy_;
  xet::ChunkIndex* chunk_index_;
  std::unique_ptr<xet::XetTokens> xet_tokens_;
  // Resolves and single-connection transfers of this downloader's files share connections.
  mutable ConnectionPool connections_;
};

}  // namespace rbee::provisioner
