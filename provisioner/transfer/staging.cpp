#include "staging.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <rbee/catalog/model_catalog.hpp>

#include "file_hash.hpp"

namespace fs = std::filesystem;

namespace rbee::provisioner {
namespace {

using catalog::Directory;
using catalog::FileSystemError;
using catalog::UniqueFd;

constexpr std::size_t kMaxSidecarBytes = 1 << 20;  // thousands of ranges; ours hold a handful

// The file system's refusals, as the download errors the provisioner reports.
template <class Call>
auto as_download_error(Call&& call) {
  try {
    return call();
  } catch (const FileSystemError& error) {
    throw DownloadError(DownloadErrorKind::disk, error.what(), error.error_number());
  }
}

std::string staging_key(const FileToFetch& file) {
  const std::string identity =
      fmt::format("{}\n{}\n{}{}", file.path, file.size, file.sha256, file.git_sha1);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(identity.data(), identity.size(), digest, &length, EVP_sha256(), nullptr);
  std::string key;
  for (unsigned int i = 0; i < 20; ++i) key += fmt::format("{:02x}", digest[i]);
  return key;
}

}  // namespace

std::string part_file_name(const FileToFetch& file) {
  return staging_key(file) + ".part";
}
std::string sidecar_file_name(const FileToFetch& file) {
  return staging_key(file) + ".ranges";
}

StagedFile::StagedFile(const Directory& model, const FileToFetch& file)
    : model_(model),
      work_(as_download_error(
          [&] { return *model.descend(catalog::ModelCatalog::kWorkFolder, true); })),
      file_(file),
      key_(staging_key(file)) {}

fs::path StagedFile::part_path() const {
  return work_.path() / (key_ + ".part");
}
fs::path StagedFile::destination() const {
  return model_.path() / stored_path(file_);
}

UniqueFd StagedFile::open_part() const {
  return as_download_error([&] {
    // O_EXCL when it is new: a name that appeared meanwhile (a symlink, say) is refused.
    UniqueFd fd = work_.open_file(key_ + ".part", O_RDWR);
    if (!fd) fd = work_.create_file(key_ + ".part", O_RDWR);
    struct stat info {};
    if (::fstat(fd.get(), &info) != 0 || !S_ISREG(info.st_mode)) {
      throw FileSystemError("open", part_path(), EINVAL);
    }
    return fd;
  });
}

bool StagedFile::has_part() const {
  return as_download_error([&] { return work_.status_of(key_ + ".part").has_value(); });
}

std::uint64_t StagedFile::part_size() const {
  return as_download_error([&]() -> std::uint64_t {
    const auto info = work_.status_of(key_ + ".part");
    return info && S_ISREG(info->st_mode) ? static_cast<std::uint64_t>(info->st_size) : 0;
  });
}

bool StagedFile::adopt_legacy_part() const {
  return as_download_error([&] {
    if (has_part()) return false;
    const auto [parent, name] = split_parent(file_.path);
    const auto folder = model_.descend(parent, false);
    if (!folder) return false;
    const std::string part = std::string(name) + ".part", ranges = part + ".ranges";
    const auto legacy = folder->status_of(part);
    if (!legacy || !S_ISREG(legacy->st_mode)) return false;  // a symlink is not ours to adopt
    // The sidecar first: a part without its sidecar would be taken for a contiguous prefix.
    const auto legacy_ranges = folder->status_of(ranges);
    if (legacy_ranges && S_ISREG(legacy_ranges->st_mode)) {
      folder->rename_to(ranges, work_, key_ + ".ranges");
    }
    folder->rename_to(part, work_, key_ + ".part");
    work_.sync();
    return true;
  });
}

std::optional<std::string> StagedFile::read_sidecar() const {
  return as_download_error([&] { return work_.read_file(key_ + ".ranges", kMaxSidecarBytes); });
}

void StagedFile::write_sidecar(std::string_view json) const {
  as_download_error([&] { work_.replace_file(key_ + ".ranges", json, work_); });
}

void StagedFile::remove_sidecar() const {
  as_download_error([&] { work_.remove_file(key_ + ".ranges"); });
}

void StagedFile::discard() const {
  as_download_error([&] {
    work_.remove_file(key_ + ".ranges");
    work_.remove_file(key_ + ".part");
  });
}

void StagedFile::publish(int part_fd) const {
  if (::fsync(part_fd) != 0) {
    const int error = errno;
    // Linux may drop the dirty pages that failed to write and report it only once: what the
    // part now holds is unknown, so it is not kept for a resume.
    discard();
    throw_disk_error("fsync", part_path(), error);
  }
  struct stat verified {};
  if (::fstat(part_fd, &verified) != 0) throw_disk_error("inspect", part_path(), errno);
  if (verified.st_nlink == 0) {
    // Someone removed or renamed over the part while we wrote it: what its name holds now is
    // not what was verified, and the verified bytes have no name left to publish.
    throw DownloadError(DownloadErrorKind::disk,
                        fmt::format("{} was removed or replaced by another process during the "
                                    "download; nothing was published",
                                    part_path().string()));
  }
  as_download_error([&] {
    const std::string blob = stored_path(file_);
    const auto [parent, name] = split_parent(blob);
    const Directory folder = *model_.descend(parent, true);
    const std::string published = key_ + ".publish";
    work_.remove_file(published);  // left by a crash between the link and the rename
    const std::string self = fmt::format("/proc/self/fd/{}", part_fd);
    if (::linkat(AT_FDCWD, self.c_str(), work_.fd(), published.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      work_.rename_to(published, folder, name);
      work_.remove_file(key_ + ".part");
    } else {
      // No /proc: rename the part by name, then check it is still the file we verified.
      work_.rename_to(key_ + ".part", folder, name);
      const auto placed = folder.status_of(name);
      if (!placed || placed->st_ino != verified.st_ino || placed->st_dev != verified.st_dev) {
        folder.remove_file(name);
        throw DownloadError(DownloadErrorKind::disk,
                            fmt::format("{} was replaced by another process during the "
                                        "download; nothing was published",
                                        part_path().string()));
      }
    }
    work_.remove_file(key_ + ".ranges");
    folder.sync();
  });
}

}  // namespace rbee::provisioner
