#pragma once
// Directory: an open folder of the cache, reached without following symlinks, and the files in
// it opened relative to its descriptor.
//
// The cache may be shared with other hives and users (DESIGN §12), so a path is a question,
// not an answer: between two calls a folder can be swapped for a symlink to elsewhere. Every
// step below the cache root is therefore one openat(O_NOFOLLOW) from the folder above, and a
// file is opened, written and renamed relative to the descriptor of the folder that holds it.
// The root itself may be a symlink: that is the operator's choice, made before the hive runs.

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rbee/catalog/errors.hpp"

namespace rbee::catalog {

// A file descriptor closed by its destructor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  ~UniqueFd();
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// FileSystemError::error_number() of a name that is not a regular file (a FIFO, a socket, a
// device, a folder where a file should be). Linux has no errno for it; no errno is negative.
inline constexpr int kNotRegularFile = -1;

// The errno of a refused file system call, with what was attempted on which path.
class FileSystemError : public CatalogError {
 public:
  FileSystemError(std::string_view what, const std::filesystem::path& path, int error);
  int error_number() const { return error_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int error_;
};

class Directory {
 public:
  // The folder at `path`, created (with its parents) when `create` is set and it is missing.
  static Directory open(const std::filesystem::path& path, bool create);

  // The folder `relative` ('/'-separated) below this one, one segment at a time, each with
  // O_NOFOLLOW: a symlink on the way is refused (FileSystemError with ELOOP or ENOTDIR). Missing
  // folders are created when `create` is set; otherwise nullopt.
  std::optional<Directory> descend(std::string_view relative, bool create) const;

  // open(2) of the regular file `name` in this folder, always with O_NOFOLLOW | O_CLOEXEC; a
  // missing file gives an empty UniqueFd when `flags` lacks O_CREAT, any other refusal throws.
  // Anything but a regular file (a FIFO, say) is refused (kNotRegularFile) without blocking.
  UniqueFd open_file(std::string_view name, int flags, mode_t mode = 0644) const;
  // Creates `name` exclusively (O_EXCL), replacing a regular file left there before; a symlink
  // or folder at `name` is refused.
  UniqueFd create_file(std::string_view name, int flags) const;

  // The names in this folder (not "." and ".."), in no particular order.
  std::vector<std::string> entry_names() const;
  // lstat of `name`: nullopt when it does not exist.
  std::optional<struct stat> status_of(std::string_view name) const;
  // Removes the file `name`; false when there was none.
  bool remove_file(std::string_view name) const;
  // Removes `name` and, when it is a folder, everything below it, each step by unlinkat from
  // the descriptor of the folder that holds it: a symlink is removed itself, never followed,
  // so swapping a folder for a symlink mid-way cannot aim the removal elsewhere. False when
  // there was nothing at `name`.
  bool remove_tree(std::string_view name) const;
  // Atomic rename of `name` here to `target_name` in `target` (replacing it).
  void rename_to(std::string_view name, const Directory& target,
                 std::string_view target_name) const;
  // Writes `content` to `name` atomically: a temp file in `scratch` (same file system), fsync,
  // rename over `name`, fsync of this folder. After a crash `name` is the old or the new content.
  void replace_file(std::string_view name, std::string_view content,
                    const Directory& scratch) const;
  // Reads the whole regular file `name` (at most `limit` bytes, else FileSystemError EFBIG);
  // nullopt when missing.
  std::optional<std::string> read_file(std::string_view name, std::size_t limit) const;
  void sync() const;

  int fd() const { return fd_.get(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  Directory(UniqueFd fd, std::filesystem::path path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::filesystem::path path_;  // for messages only: never used to reach the folder
};

// "a/b/c.bin" → {"a/b", "c.bin"}; a path without a folder has an empty parent. Views of `path`.
std::pair<std::string_view, std::string_view> split_parent(std::string_view path);

// Writes all of `data` at `offset` of `fd`, retrying short writes; throws FileSystemError.
void write_all_at(int fd, std::string_view data, std::uint64_t offset,
                  const std::filesystem::path& path);

}  // namespace rbee::catalog
