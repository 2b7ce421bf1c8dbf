#include "rbee/catalog/file_lock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "rbee/catalog/errors.hpp"

namespace rbee::catalog {

FileLock::FileLock(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw CatalogError(CatalogErrorCode::io_error,
                       fmt::format("cannot open lock file {}: {}", path.string(), std::strerror(errno)));
  }
  struct flock request {};
  request.l_type = F_WRLCK;
  request.l_whence = SEEK_SET;
  while (::fcntl(fd_, F_OFD_SETLKW, &request) != 0) {
    if (errno == EINTR) continue;
    const int error = errno;
    ::close(fd_);
    throw CatalogError(CatalogErrorCode::io_error,
                       fmt::format("cannot lock {}: {}", path.string(), std::strerror(error)));
  }
}

FileLock::~FileLock() {
  // Closing the last descriptor of the open file description releases the lock.
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace rbee::catalog
