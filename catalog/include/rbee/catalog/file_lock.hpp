#pragma once
// FileLock: an exclusive advisory lock on a file, across processes and threads.

#include <filesystem>
#include <memory>
#include <stop_token>

#include "rbee/catalog/errors.hpp"

namespace rbee::catalog {

// Uses open-file-description locks (F_OFD_SETLKW): unlike flock() they work on NFS, and unlike
// classic POSIX record locks two threads of one process exclude each other. Blocks until the
// lock is held, or throws CatalogError (cancelled) as soon as `stop` is requested; released by
// the destructor. Creates the lock file (and its folders).
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path, std::stop_token stop = {});
  ~FileLock();
  // The lock if it is free now, nullptr when another holder has it. Never waits.
  static std::unique_ptr<FileLock> try_acquire(const std::filesystem::path& path);
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  FileLock() = default;
  int fd_ = -1;
};

}  // namespace rbee::catalog
