#include "rbee/catalog/model_catalog.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "rbee/catalog/file_lock.hpp"
#include "rbee/catalog/repo_store.hpp"

namespace fs = std::filesystem;

namespace rbee::catalog {
namespace {

constexpr const char* kMetadataFile = "metadata.yaml";
constexpr const char* kLockFolder = ".locks";

std::int64_t now_unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

ModelEntry unreadable_entry(const ModelId& id, const fs::path& dir, std::string_view reason) {
  ModelEntry broken;
  broken.id = id;
  broken.path = dir.string();
  broken.status = ModelStatus::failed;
  broken.error = fmt::format("metadata.yaml is unreadable: {}", reason);
  return broken;
}

}  // namespace

ModelCatalog::ModelCatalog(fs::path root, std::chrono::milliseconds progress_interval)
    : root_(std::move(root)), progress_interval_(progress_interval) {}

fs::path ModelCatalog::model_dir(const ModelId& id) const {
  return root_ / id.folder();
}

fs::path ModelCatalog::snapshot_dir(const ModelId& id, std::string_view commit) const {
  return model_dir(id) / kSnapshotsFolder / commit;
}

fs::path ModelCatalog::blob_path(const ModelId& id, std::string_view blob) const {
  return model_dir(id) / kBlobsFolder / blob;
}

// Locks live outside the model folder so that remove() can delete the folder while holding one,
// in a folder per model so that no model's lock name is another's ("x.download" vs "x").
fs::path ModelCatalog::lock_path(const ModelId& id) const {
  return root_ / kLockFolder / id.folder() / "catalog.lock";
}

fs::path ModelCatalog::download_lock_path(const ModelId& id) const {
  return root_ / kLockFolder / id.folder() / "download.lock";
}

std::optional<Directory> ModelCatalog::open_model_dir(const ModelId& id, bool create) const {
  std::error_code ec;
  if (!create && !fs::exists(root_, ec)) return std::nullopt;
  return Directory::open(root_, create).descend(id.folder(), create);
}

// nullopt when the model has no entry.
std::optional<ModelEntry> ModelCatalog::read_entry(const ModelId& id) const {
  try {
    const auto dir = open_model_dir(id, false);
    if (!dir) return std::nullopt;
    const auto text = dir->read_file(kMetadataFile, kMaxMetadataBytes);
    if (!text) return std::nullopt;
    ModelEntry entry = parse_model_entry(*text);
    if (entry.id != id) {
      throw std::runtime_error(
          fmt::format("it names model '{}', not the folder's '{}'", entry.id.str(), id.str()));
    }
    return entry;
  } catch (const std::exception& error) {
    return unreadable_entry(id, model_dir(id), error.what());
  }
}

// The folders models--… whose names are model ids, sorted; whether each holds an entry is for
// the caller to find out. A shared Hugging Face cache also holds datasets--…, spaces--… and
// models other tools downloaded: only the ones with an entry are the catalog's.
std::vector<ModelId> ModelCatalog::model_ids() const {
  std::vector<ModelId> ids;
  std::error_code ec;
  for (const auto& model : fs::directory_iterator(root_, ec)) {
    if (!model.is_directory(ec) || model.is_symlink(ec)) continue;
    try {
      ids.push_back(model_id_of_folder(model.path().filename().string()));
    } catch (const CatalogError&) {
      // A folder whose name is no model id was not made by the catalog: not ours to list.
    }
  }
  std::sort(ids.begin(), ids.end(),
            [](const ModelId& a, const ModelId& b) { return a.str() < b.str(); });
  return ids;
}

std::vector<ModelEntry> ModelCatalog::list() const {
  std::vector<ModelEntry> entries;
  for (const auto& id : model_ids()) {
    if (auto entry = read_entry(id)) entries.push_back(std::move(*entry));
  }
  return entries;
}

std::optional<ModelEntry> ModelCatalog::get(const ModelId& id) const {
  return read_entry(id);
}

std::optional<struct stat> ModelCatalog::entry_file_status(const ModelId& id) const {
  try {
    const auto dir = open_model_dir(id, false);
    return dir ? dir->status_of(kMetadataFile) : std::nullopt;
  } catch (const CatalogError&) {
    return std::nullopt;  // a symlinked folder: no entry this catalog wrote
  }
}

// The temp file lives in the working folder: a repo file can never have its name.
void ModelCatalog::write_entry(ModelEntry& entry) const {
  entry.updated_at_ms = now_unix_ms();
  const bool first_write = entry.added_at_ms == 0;
  if (first_write) entry.added_at_ms = entry.updated_at_ms;
  for (auto& revision : entry.revisions) {
    if (revision.added_at_ms == 0) revision.added_at_ms = entry.updated_at_ms;
  }
  // Before anything is linked, the folder where the commit's snapshot will be (or the model's).
  if (entry.path.empty()) {
    entry.path = entry.commit.empty() ? model_dir(entry.id).string()
                                      : snapshot_dir(entry.id, entry.commit).string();
  }
  const Directory dir = *open_model_dir(entry.id, true);
  const Directory work = *dir.descend(kWorkFolder, true);
  // HF tools take a model folder without snapshots/ for a broken one (scanCacheDir warns);
  // made with the entry, not at every progress write.
  if (first_write) dir.descend(kSnapshotsFolder, true);
  dir.replace_file(kMetadataFile, to_yaml(entry), work);
  ++writes_;
}

void ModelCatalog::put(ModelEntry entry, std::stop_token stop) {
  FileLock lock(lock_path(entry.id), std::move(stop));
  write_entry(entry);
}

ModelEntry ModelCatalog::update(const ModelId& id, const std::function<void(ModelEntry&)>& change,
                                std::stop_token stop) {
  FileLock lock(lock_path(id), std::move(stop));
  ModelEntry entry = get(id).value_or(ModelEntry{});
  entry.id = id;
  change(entry);
  write_entry(entry);
  return entry;
}

bool ModelCatalog::update_progress(const ModelId& id, std::uint64_t bytes_done,
                                   std::uint64_t bytes_total, std::stop_token stop) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(throttle_mutex_);
    auto [it, first] = last_progress_write_.try_emplace(id.str(), now);
    if (!first && bytes_done != bytes_total && now - it->second < progress_interval_) return false;
    it->second = now;
  }
  FileLock lock(lock_path(id), std::move(stop));
  auto entry = get(id);
  if (!entry) {  // deleted meanwhile: a progress write never re-creates an entry
    std::lock_guard throttle(throttle_mutex_);
    last_progress_write_.erase(id.str());
    return false;
  }
  entry->status = ModelStatus::downloading;
  entry->bytes_done = bytes_done;
  entry->bytes_total = bytes_total;
  entry->error.clear();
  write_entry(*entry);
  return true;
}

bool ModelCatalog::remove(const ModelId& id, std::stop_token stop) {
  FileLock lock(lock_path(id), std::move(stop));
  const auto dir = open_model_dir(id, false);  // throws for a symlinked folder: never followed
  if (!dir) return false;
  const auto entry = get(id);
  if (entry) {
    ModelEntry deleting = *entry;
    deleting.status = ModelStatus::deleting;
    deleting.error.clear();
    write_entry(deleting);
  }
  // Everything but the entry, then the entry, then the folder; all of it through the folder's
  // descriptor (a path would follow a symlink swapped in since it was opened).
  for (const auto& child : dir->entry_names()) {
    if (child != kMetadataFile) dir->remove_tree(child);
  }
  dir->remove_file(kMetadataFile);
  dir->sync();
  const Directory root = Directory::open(root_, false);
  if (::unlinkat(root.fd(), id.folder().c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    throw FileSystemError("remove", dir->path(), errno);
  }
  root.sync();
  // The hive's own locks (a held lock stays valid); huggingface_hub keeps its blob locks in the
  // same folder, so the folder goes only when empty.
  std::error_code ec;
  fs::remove(lock_path(id), ec);
  fs::remove(download_lock_path(id), ec);
  fs::remove(root_ / kLockFolder / id.folder(), ec);
  {
    std::lock_guard throttle(throttle_mutex_);
    last_progress_write_.erase(id.str());
  }
  return entry.has_value();
}

std::size_t ModelCatalog::remove_stale_temp_files() const {
  std::size_t removed = 0;
  for (const auto& id : model_ids()) {  // no entry is parsed: this runs at every start
    const auto writer = FileLock::try_acquire(lock_path(id));
    const auto downloader = FileLock::try_acquire(download_lock_path(id));
    if (!writer || !downloader) continue;  // being written right now
    try {
      const auto work = open_model_dir(id, false)->descend(kWorkFolder, false);
      if (!work) continue;
      std::error_code ec;
      for (const auto& file : fs::directory_iterator(work->path(), ec)) {
        const std::string name = file.path().filename().string();
        if (name.ends_with(".tmp") && work->remove_file(name)) ++removed;
      }
    } catch (const CatalogError&) {
      // A folder we cannot clean is left as it is; the next write reports it if it matters.
    }
  }
  return removed;
}

}  // namespace rbee::catalog
