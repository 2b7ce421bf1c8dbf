#include "rbee/catalog/directory.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace fs = std::filesystem;

namespace rbee::catalog {
namespace {

std::string describe(std::string_view what, const fs::path& path, int error) {
  // ELOOP from O_NOFOLLOW says "Too many levels of symbolic links", which reads like a loop;
  // kNotRegularFile is ours: a FIFO, a socket or a device where a file should be.
  const std::string reason = error == ELOOP ? "it is a symlink, which the hive never follows"
                             : error == kNotRegularFile
                                 ? "it is not a regular file, which the hive never opens"
                                 : std::string(std::strerror(error));
  return fmt::format("cannot {} {}: {}", what, path.string(), reason);
}

int retry_on_eintr(const auto& call) {
  int result;
  do {
    result = call();
  } while (result < 0 && errno == EINTR);
  return result;
}

}  // namespace

std::pair<std::string_view, std::string_view> split_parent(std::string_view path) {
  const auto slash = path.rfind('/');
  if (slash == std::string_view::npos) return {{}, path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

FileSystemError::FileSystemError(std::string_view what, const fs::path& path, int error)
    : CatalogError(CatalogErrorCode::io_error, describe(what, path, error)),
      path_(path),
      error_(error) {}

// The cache root itself may be a symlink (~/.cache on another disk): the operator chose it
// before the hive ran, so it is followed; nothing below it is.
Directory Directory::open(const fs::path& path, bool create) {
  if (create) {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw FileSystemError("create folder", path, ec.value());
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw FileSystemError("open folder", path, errno);
  return Directory(std::move(fd), path);
}

std::optional<Directory> Directory::descend(std::string_view relative, bool create) const {
  UniqueFd current(::dup(fd_.get()));
  if (!current) throw FileSystemError("open folder", path_, errno);
  fs::path path = path_;
  while (!relative.empty()) {
    const auto slash = relative.find('/');
    const std::string segment(relative.substr(0, slash));
    relative = slash == std::string_view::npos ? std::string_view{} : relative.substr(slash + 1);
    if (segment.empty() || segment == "." || segment == "..") {
      throw FileSystemError("open folder", path / segment, EINVAL);
    }
    path /= segment;
    const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    UniqueFd next(::openat(current.get(), segment.c_str(), flags));
    if (!next && errno == ENOENT) {
      if (!create) return std::nullopt;
      if (::mkdirat(current.get(), segment.c_str(), 0755) != 0 && errno != EEXIST) {
        throw FileSystemError("create folder", path, errno);
      }
      next = UniqueFd(::openat(current.get(), segment.c_str(), flags));
    }
    if (!next) {
      int error = errno;
      struct stat info {};
      // O_DIRECTORY reports a symlink as ENOTDIR: say what it is.
      if (::fstatat(current.get(), segment.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(info.st_mode)) {
        error = ELOOP;
      }
      throw FileSystemError("open folder", path, error);
    }
    current = std::move(next);
  }
  return Directory(std::move(current), std::move(path));
}

UniqueFd Directory::open_file(std::string_view name, int flags, mode_t mode) const {
  const std::string file(name);
  // O_NONBLOCK: a FIFO planted in the cache would otherwise block the open until a writer came,
  // and with it the catalog, the mirror or the chunk index (a lock held by the caller). On a
  // regular file it changes nothing and is cleared below all the same.
  UniqueFd fd(retry_on_eintr([&] {
    return ::openat(fd_.get(), file.c_str(), flags | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, mode);
  }));
  if (!fd && errno == ENOENT && !(flags & O_CREAT)) return fd;
  if (!fd) throw FileSystemError("open", path_ / file, errno);
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) throw FileSystemError("inspect", path_ / file, errno);
  if (!S_ISREG(info.st_mode)) throw FileSystemError("open", path_ / file, kNotRegularFile);
  if (!(flags & O_NONBLOCK)) {
    const int status = ::fcntl(fd.get(), F_GETFL);
    if (status < 0 || ::fcntl(fd.get(), F_SETFL, status & ~O_NONBLOCK) != 0) {
      throw FileSystemError("open", path_ / file, errno);
    }
  }
  return fd;
}

UniqueFd Directory::create_file(std::string_view name, int flags) const {
  const std::string file(name);
  for (int attempt = 0;; ++attempt) {
    UniqueFd fd(
        ::openat(fd_.get(), file.c_str(), flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (fd) return fd;
    if (errno != EEXIST || attempt == 3) throw FileSystemError("create", path_ / file, errno);
    // A leftover of a crash: only a regular file may be replaced.
    const auto existing = status_of(file);
    if (existing && !S_ISREG(existing->st_mode)) {
      throw FileSystemError("create", path_ / file, S_ISLNK(existing->st_mode) ? ELOOP : EEXIST);
    }
    remove_file(file);
  }
}

std::optional<struct stat> Directory::status_of(std::string_view name) const {
  struct stat info {};
  const std::string file(name);
  if (::fstatat(fd_.get(), file.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0) return info;
  if (errno == ENOENT) return std::nullopt;
  throw FileSystemError("inspect", path_ / file, errno);
}

bool Directory::remove_file(std::string_view name) const {
  const std::string file(name);
  if (::unlinkat(fd_.get(), file.c_str(), 0) == 0) return true;
  if (errno == ENOENT) return false;
  throw FileSystemError("remove", path_ / file, errno);
}

std::vector<std::string> Directory::entry_names() const {
  UniqueFd listing_fd(::dup(fd_.get()));  // closedir closes the descriptor it reads
  DIR* listing = listing_fd ? ::fdopendir(listing_fd.get()) : nullptr;
  if (!listing) throw FileSystemError("list", path_, errno);
  listing_fd.release();
  ::rewinddir(listing);  // the offset is shared with fd_, which an earlier listing moved
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  const int read_error = errno;
  ::closedir(listing);
  if (read_error != 0) throw FileSystemError("list", path_, read_error);
  return names;
}

bool Directory::remove_tree(std::string_view name) const {
  const std::string entry(name);
  if (::unlinkat(fd_.get(), entry.c_str(), 0) == 0) return true;  // a file, a link, a FIFO
  if (errno == ENOENT) return false;
  if (errno != EISDIR && errno != EPERM) throw FileSystemError("remove", path_ / entry, errno);
  // A folder (unlinkat says EISDIR on Linux, EPERM by POSIX): empty it through its own
  // descriptor, opened with O_NOFOLLOW by descend(), then remove it.
  std::optional<Directory> folder;
  try {
    folder = descend(entry, false);
  } catch (const FileSystemError& error) {
    // Swapped for a symlink since the unlinkat above: remove the link, follow nothing.
    if (error.error_number() != ELOOP && error.error_number() != ENOTDIR) throw;
    return remove_tree(name);
  }
  if (!folder) return false;
  for (const auto& child : folder->entry_names()) folder->remove_tree(child);
  if (::unlinkat(fd_.get(), entry.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    throw FileSystemError("remove", path_ / entry, errno);
  }
  return true;
}

void Directory::rename_to(std::string_view name, const Directory& target,
                          std::string_view target_name) const {
  const std::string from(name), to(target_name);
  if (::renameat(fd_.get(), from.c_str(), target.fd(), to.c_str()) != 0) {
    throw FileSystemError("rename into", target.path() / to, errno);
  }
}

void Directory::replace_file(std::string_view name, std::string_view content,
                             const Directory& scratch) const {
  static std::atomic<unsigned> counter{0};
  const std::string temp = fmt::format("{}.{}.{}.tmp", name, ::getpid(), counter++);
  UniqueFd fd = scratch.create_file(temp, O_WRONLY);
  try {
    write_all_at(fd.get(), content, 0, scratch.path() / temp);
    if (::fsync(fd.get()) != 0) throw FileSystemError("fsync", scratch.path() / temp, errno);
    if (::close(fd.release()) != 0) throw FileSystemError("close", scratch.path() / temp, errno);
    scratch.rename_to(temp, *this, name);
  } catch (...) {
    ::unlinkat(scratch.fd(), temp.c_str(), 0);
    throw;
  }
  sync();
}

std::optional<std::string> Directory::read_file(std::string_view name, std::size_t limit) const {
  UniqueFd fd = open_file(name, O_RDONLY);
  if (!fd) return std::nullopt;
  std::string content;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw FileSystemError("read", path_ / name, errno);
    if (n == 0) return content;
    if (content.size() + static_cast<std::size_t>(n) > limit) {
      throw FileSystemError("read", path_ / name, EFBIG);
    }
    content.append(buffer, static_cast<std::size_t>(n));
  }
}

void Directory::sync() const {
  if (::fsync(fd_.get()) != 0) throw FileSystemError("fsync folder", path_, errno);
}

void write_all_at(int fd, std::string_view data, std::uint64_t offset, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw FileSystemError("write", path, errno);
    if (n == 0) throw FileSystemError("write", path, ENOSPC);
    data.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
}

}  // namespace rbee::catalog
