#pragma once
// FileHash: a file's checksum as the Hub lists it, fed as bytes arrive (internal).

#include <openssl/evp.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "rbee/provisioner/file_downloader.hpp"

namespace rbee::provisioner {

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

// Reads [from, to) of `fd` through `hash` (the page cache makes recently written data cheap).
// Throws DownloadError (disk) naming `path` when the read fails.
void hash_file_range(int fd, const std::filesystem::path& path, std::uint64_t from,
                     std::uint64_t to, FileHash& hash);

[[noreturn]] void throw_disk_error(std::string_view what, const std::filesystem::path& path,
                                   int error);

}  // namespace rbee::provisioner
