#include "rbee/catalog/file_lock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "rbee/catalog/errors.hpp"

namespace rbee::catalog {
namespace {

// fcntl cannot wait with a timeout, so a cancellable wait polls; 25 ms keeps a handover from
// another process quick without spinning.
constexpr auto kLockPollInterval = std::chrono::milliseconds(25);

bool try_lock(int fd, int command) {
  struct flock request {};
  request.l_type = F_WRLCK;
  request.l_whence = SEEK_SET;
  while (::fcntl(fd, command, &request) != 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return false;
    throw CatalogError(CatalogErrorCode::io_error,
                       fmt::format("cannot take a lock: {}", std::strerror(errno)));
  }
  return true;
}

// Sleeps one poll interval; returns early when `stop` is requested.
void wait_a_moment(const std::stop_token& stop) {
  std::mutex mutex;
  std::condition_variable_any wake;
  std::unique_lock lock(mutex);
  wake.wait_for(lock, stop, kLockPollInterval, [] { return false; });
}

}  // namespace

FileLock::FileLock(const std::filesystem::path& path, std::stop_token stop) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw CatalogError(
        CatalogErrorCode::io_error,
        fmt::format("cannot open lock file {}: {}", path.string(), std::strerror(errno)));
  }
  try {
    if (!stop.stop_possible()) {
      try_lock(fd_, F_OFD_SETLKW);
      return;
    }
    while (!try_lock(fd_, F_OFD_SETLK)) {
      if (stop.stop_requested()) {
        throw CatalogError(CatalogErrorCode::cancelled,
                           fmt::format("cancelled while waiting for the lock {}", path.string()));
      }
      wait_a_moment(stop);
    }
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

std::unique_ptr<FileLock> FileLock::try_acquire(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  std::unique_ptr<FileLock> lock(new FileLock());
  lock->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (lock->fd_ < 0) {
    throw CatalogError(
        CatalogErrorCode::io_error,
        fmt::format("cannot open lock file {}: {}", path.string(), std::strerror(errno)));
  }
  return try_lock(lock->fd_, F_OFD_SETLK) ? std::move(lock) : nullptr;
}

FileLock::~FileLock() {
  // Closing the last descriptor of the open file description releases the lock.
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace rbee::catalog
