#include "file_hash.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace rbee::provisioner {

FileHash::FileHash(const FileToFetch& file) : file_(file), context_(EVP_MD_CTX_new()) {
  reset();
}

FileHash::~FileHash() {
  EVP_MD_CTX_free(context_);
}

void FileHash::reset() {
  EVP_DigestInit_ex(context_, uses_sha256() ? EVP_sha256() : EVP_sha1(), nullptr);
  if (!uses_sha256()) {
    const std::string header = fmt::format("blob {}", file_.size) + std::string(1, '\0');
    update(header.data(), header.size());
  }
}

void FileHash::update(const char* data, std::size_t length) {
  EVP_DigestUpdate(context_, data, length);
}

std::string FileHash::hex_digest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_DigestFinal_ex(context_, digest, &length);
  std::string hex;
  for (unsigned i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

const std::string& expected_checksum(const FileToFetch& file) {
  return file.sha256.empty() ? file.git_sha1 : file.sha256;
}

const std::string& FileHash::expected() const {
  return expected_checksum(file_);
}

std::string_view FileHash::algorithm() const {
  return uses_sha256() ? "sha256" : "git-sha1";
}

HashPipeline::HashPipeline(FileHash& hash) : hash_(hash), thread_([this] { run(); }) {}

HashPipeline::~HashPipeline() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void HashPipeline::update(const char* data, std::size_t length) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return queue_.size() < kMaxQueued; });
  queue_.emplace_back(data, data + length);
  changed_.notify_all();
}

void HashPipeline::drain() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return queue_.empty() && !hashing_; });
}

void HashPipeline::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    std::vector<char> block = std::move(queue_.front());
    queue_.pop_front();
    hashing_ = true;
    lock.unlock();
    hash_.update(block.data(), block.size());
    lock.lock();
    hashing_ = false;
    changed_.notify_all();
  }
}

void hash_file_range(int fd, const std::filesystem::path& path, std::uint64_t from,
                     std::uint64_t to, FileHash& hash) {
  std::vector<char> buffer(std::min<std::uint64_t>(to - from, 1 << 20));
  for (std::uint64_t offset = from; offset < to;) {
    const std::size_t want = std::min<std::uint64_t>(buffer.size(), to - offset);
    const ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw_disk_error("read", path, n < 0 ? errno : EIO);
    hash.update(buffer.data(), static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
}

void throw_disk_error(std::string_view what, const std::filesystem::path& path, int error) {
  throw DownloadError(DownloadErrorKind::disk,
                      fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(error)),
                      error);
}

}  // namespace rbee::provisioner
