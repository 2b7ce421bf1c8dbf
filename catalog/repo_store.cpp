#include "rbee/catalog/repo_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include <fmt/format.h>

namespace rbee::catalog {
namespace {

bool all_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// refs/ and the folders of a ref with '/' ("refs/pr" of "refs/pr/1").
std::string refs_folder(std::string_view parent) {
  return parent.empty() ? std::string(kRefsFolder) : fmt::format("{}/{}", kRefsFolder, parent);
}

std::string snapshot_folder(std::string_view commit, std::string_view parent) {
  std::string folder = fmt::format("{}/{}", kSnapshotsFolder, commit);
  if (!parent.empty()) folder += fmt::format("/{}", parent);
  return folder;
}

void check_commit(std::string_view commit, const Directory& model) {
  if (!is_commit_id(commit)) throw FileSystemError("name a snapshot in", model.path(), EINVAL);
}

}  // namespace

bool is_blob_name(std::string_view name) {
  return (name.size() == 40 || name.size() == 64) && all_hex(name);
}

bool is_commit_id(std::string_view text) {
  return text.size() == 40 && all_hex(text);
}

std::string snapshot_link_text(std::string_view repo_path, std::string_view blob) {
  std::string text = "../../";
  for (char c : repo_path) {
    if (c == '/') text += "../";
  }
  return fmt::format("{}{}/{}", text, kBlobsFolder, blob);
}

void link_snapshot_file(const Directory& model, std::string_view commit, std::string_view repo_path,
                        std::string_view blob) {
  check_commit(commit, model);
  if (!is_blob_name(blob)) throw FileSystemError("link a blob in", model.path(), EINVAL);
  const auto [parent, name] = split_parent(repo_path);
  const Directory folder = *model.descend(snapshot_folder(commit, parent), true);
  const std::string text = snapshot_link_text(repo_path, blob);
  try {
    if (read_snapshot_link(model, commit, repo_path) == std::string(blob)) return;
  } catch (const FileSystemError&) {
    // Something else is at the name (a file, a link elsewhere): replaced below, never followed.
  }
  static std::atomic<unsigned> counter{0};
  const std::string temp = fmt::format(".{}.{}.{}.link", name, ::getpid(), counter++);
  if (::symlinkat(text.c_str(), folder.fd(), temp.c_str()) != 0) {
    throw FileSystemError("link", folder.path() / temp, errno);
  }
  // The rename replaces a link (or a file) at the name, never what a link points to.
  if (::renameat(folder.fd(), temp.c_str(), folder.fd(), std::string(name).c_str()) != 0) {
    const int error = errno;
    ::unlinkat(folder.fd(), temp.c_str(), 0);
    throw FileSystemError("link", folder.path() / std::string(name), error);
  }
  folder.sync();
}

std::optional<std::string> read_snapshot_link(const Directory& model, std::string_view commit,
                                              std::string_view repo_path) {
  check_commit(commit, model);
  const auto [parent, name] = split_parent(repo_path);
  const auto folder = model.descend(snapshot_folder(commit, parent), false);
  if (!folder) return std::nullopt;
  const std::string link_name(name);
  const auto status = folder->status_of(link_name);
  if (!status) return std::nullopt;
  const auto where = folder->path() / link_name;
  if (!S_ISLNK(status->st_mode)) throw FileSystemError("read the link", where, EINVAL);
  char text[512];
  const ssize_t length = ::readlinkat(folder->fd(), link_name.c_str(), text, sizeof text);
  if (length < 0) throw FileSystemError("read the link", where, errno);
  const std::string_view link(text, static_cast<std::size_t>(length));
  const std::string_view blob = link.substr(link.rfind('/') + 1);
  if (static_cast<std::size_t>(length) == sizeof text || !is_blob_name(blob) ||
      link != snapshot_link_text(repo_path, blob)) {
    // Not a link the hive (or huggingface_hub) makes: never followed.
    throw FileSystemError("read the link", where, EINVAL);
  }
  return std::string(blob);
}

void write_ref(const Directory& model, std::string_view ref, std::string_view commit,
               const Directory& scratch) {
  check_commit(commit, model);
  const auto [parent, name] = split_parent(ref);
  const Directory folder = *model.descend(refs_folder(parent), true);
  folder.replace_file(name, commit, scratch);
}

std::optional<std::string> read_ref(const Directory& model, std::string_view ref) {
  const auto [parent, name] = split_parent(ref);
  try {
    const auto folder = model.descend(refs_folder(parent), false);
    if (!folder) return std::nullopt;
    auto text = folder->read_file(name, 256);
    if (!text) return std::nullopt;
    while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) text->pop_back();
    if (!is_commit_id(*text)) return std::nullopt;
    return text;
  } catch (const FileSystemError&) {
    return std::nullopt;  // a symlink or a folder where a ref should be: names no commit
  }
}

void remove_ref(const Directory& model, std::string_view ref) {
  const auto [parent, name] = split_parent(ref);
  if (const auto folder = model.descend(refs_folder(parent), false)) {
    folder->remove_file(name);
    folder->sync();
  }
}

void remove_snapshot(const Directory& model, std::string_view commit) {
  check_commit(commit, model);
  if (const auto snapshots = model.descend(kSnapshotsFolder, false)) {
    snapshots->remove_tree(commit);
    snapshots->sync();
  }
}

namespace {

void collect_link_targets(const Directory& folder, std::set<std::string>& blobs, int depth) {
  if (depth > 64) return;  // deeper than any repo path the hive accepts
  for (const auto& name : folder.entry_names()) {
    const auto status = folder.status_of(name);
    if (!status) continue;
    if (S_ISDIR(status->st_mode)) {
      collect_link_targets(*folder.descend(name, false), blobs, depth + 1);
    } else if (S_ISLNK(status->st_mode)) {
      char text[1024];
      const ssize_t length = ::readlinkat(folder.fd(), name.c_str(), text, sizeof text);
      if (length <= 0 || static_cast<std::size_t>(length) == sizeof text) continue;
      const std::string_view link(text, static_cast<std::size_t>(length));
      blobs.insert(std::string(link.substr(link.rfind('/') + 1)));
    }
  }
}

}  // namespace

std::set<std::string> linked_blobs(const Directory& model) {
  std::set<std::string> blobs;
  if (const auto snapshots = model.descend(kSnapshotsFolder, false)) {
    collect_link_targets(*snapshots, blobs, 0);
  }
  return blobs;
}

std::uint64_t remove_blobs_unless_linked(const Directory& model,
                                         const std::set<std::string>& candidates) {
  const auto blobs = model.descend(kBlobsFolder, false);
  if (!blobs) return 0;
  const std::set<std::string> linked = linked_blobs(model);
  std::uint64_t freed = 0;
  for (const auto& name : candidates) {
    if (!is_blob_name(name) || linked.contains(name)) continue;
    const auto status = blobs->status_of(name);
    if (!status || !S_ISREG(status->st_mode)) continue;
    if (blobs->remove_file(name) && status->st_nlink == 1) {
      freed += static_cast<std::uint64_t>(status->st_size);
    }
  }
  blobs->sync();
  return freed;
}

UniqueFd open_blob(const Directory& model, std::string_view blob) {
  if (!is_blob_name(blob)) throw FileSystemError("open a blob in", model.path(), EINVAL);
  const auto blobs = model.descend(kBlobsFolder, false);
  if (!blobs) return UniqueFd{};
  return blobs->open_file(blob, O_RDONLY);
}

}  // namespace rbee::catalog
