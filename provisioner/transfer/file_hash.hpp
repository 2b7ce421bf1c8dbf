#pragma once
// FileHash: a file's checksum as the Hub lists it, fed as bytes arrive (internal).

#include <openssl/evp.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "rbee/provisioner/file_downloader.hpp"

namespace rbee::provisioner {

// The checksum the Hub lists for `file`: its SHA-256 (LFS), else its git blob SHA-1.
const std::string& expected_checksum(const FileToFetch& file);

// SHA-256 for LFS files; git's blob SHA-1 ("blob <size>\0" + content) for regular ones.
class FileHash {
 public:
  explicit FileHash(const FileToFetch& file);
  ~FileHash();
  FileHash(const FileHash&) = delete;
  FileHash& operator=(const FileHash&) = delete;

  void reset();  // back to the hash of zero bytes
  void update(const char* data, std::size_t length);
  std::string hex_digest();  // ends this run: reset() before feeding again
  const std::string& expected() const;
  std::string_view algorithm() const;  // "sha256" or "git-sha1"

 private:
  bool uses_sha256() const { return !file_.sha256.empty(); }
  const FileToFetch& file_;
  EVP_MD_CTX* context_;
};

// Feeds a FileHash on its own thread, so hashing overlaps receiving and writing instead of
// adding to them (SHA-256 at ~1.7 GB/s is a real share of a single connection's time).
class HashPipeline {
 public:
  explicit HashPipeline(FileHash& hash);
  ~HashPipeline();
  HashPipeline(const HashPipeline&) = delete;
  HashPipeline& operator=(const HashPipeline&) = delete;

  // Copies the bytes and queues them; waits while kMaxQueued blocks are already waiting.
  void update(const char* data, std::size_t length);
  // Returns once every queued byte is in the hash; the hash may then be read or reset.
  void drain();

 private:
  void run();
  static constexpr std::size_t kMaxQueued = 4;
  FileHash& hash_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<char>> queue_;
  bool hashing_ = false;
  bool stopping_ = false;
  std::thread thread_;  // last: started after the members it uses
};

// Reads [from, to) of `fd` through `hash` (the page cache makes recently written data cheap).
// Throws DownloadError (disk) naming `path` when the read fails.
void hash_file_range(int fd, const std::filesystem::path& path, std::uint64_t from,
                     std::uint64_t to, FileHash& hash);

[[noreturn]] void throw_disk_error(std::string_view what, const std::filesystem::path& path,
                                   int error);

}  // namespace rbee::provisioner
