#pragma once
// StagedFile: where one file of a model is downloaded before it is verified, and how it is
// published (internal).
//
//   <model>/.rbee/<key>.part     the bytes received so far
//   <model>/.rbee/<key>.ranges   the byte ranges on disk of a ranged download (JSON)
//
// <key> is a digest of the repo path, size and checksum. A repo file can never have these names
// (validate_repo_path keeps .rbee for the hive), and a part of another revision of the file
// has another key, so it is never resumed as a prefix of this one.
//
// Everything is opened relative to the folder's descriptor with O_NOFOLLOW (DESIGN §12): a
// symlink planted at a part, a sidecar or a folder on the way is refused, never followed. The
// verified file is published by its descriptor: a hard link to the open file, made through
// /proc/self/fd, is renamed into place, so a part swapped by someone else during the download
// is never what appears as the blob.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <rbee/catalog/directory.hpp>

#include "rbee/provisioner/file_downloader.hpp"

namespace rbee::provisioner {

class StagedFile {
 public:
  // Opens (creating) the model's working folder. Throws DownloadError (disk).
  StagedFile(const catalog::Directory& model, const FileToFetch& file);

  // The part, opened for reading and writing (created when missing).
  catalog::UniqueFd open_part() const;
  bool has_part() const;
  std::uint64_t part_size() const;  // 0 without a part

  // Hives before the .rbee/ folder kept a part beside its file, as "<path>.part" with the ranges
  // in "<path>.part.ranges" (same JSON). Adopts such a part (and sidecar) when this file has
  // none yet, so an upgrade never throws away a half-downloaded file; true when it did. The
  // caller makes sure no file of the repo has that name.
  bool adopt_legacy_part() const;

  std::optional<std::string> read_sidecar() const;  // nullopt without one
  // Replaced atomically and durably (temp file, fsync, rename, fsync of the folder).
  void write_sidecar(std::string_view json) const;
  void remove_sidecar() const;
  // Removes the part and its sidecar (a mismatch, an fsync error, another revision).
  void discard() const;

  // fsyncs the verified part `part_fd`, makes it the file's blob (stored_path; replacing what was
  // there, a symlink included, without touching a symlink's target), and removes the part and
  // sidecar names. After an fsync error the part is discarded: its bytes are not trusted.
  void publish(int part_fd) const;

  std::filesystem::path part_path() const;  // for messages
  std::filesystem::path destination() const;

 private:
  const catalog::Directory& model_;
  catalog::Directory work_;
  const FileToFetch& file_;
  std::string key_;
};

using catalog::split_parent;

// The names of the part and sidecar of `file` inside the working folder (for tests and tools).
std::string part_file_name(const FileToFetch& file);
std::string sidecar_file_name(const FileToFetch& file);

}  // namespace rbee::provisioner
