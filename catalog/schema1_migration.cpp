#include "rbee/catalog/schema1_migration.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include <fmt/format.h>

#include "rbee/catalog/file_lock.hpp"
#include "rbee/catalog/repo_store.hpp"

namespace fs = std::filesystem;

namespace rbee::catalog {
namespace {

constexpr const char* kMetadataFile = "metadata.yaml";
constexpr std::size_t kMaxSchema1Bytes = ModelCatalog::kMaxMetadataBytes;

// The schema-1 model folders under the root: <org>/<name> (or _/<name>) holding a
// metadata.yaml. Folders of the new layout (models--…) and hidden ones (.locks) are not.
std::vector<ModelId> schema1_folders(const fs::path& root) {
  std::vector<ModelId> found;
  std::error_code ec;
  for (const auto& org : fs::directory_iterator(root, ec)) {
    const std::string org_name = org.path().filename().string();
    if (org_name.starts_with('.') || org_name.find("--") != std::string::npos ||
        org.is_symlink(ec) || !org.is_directory(ec)) {
      continue;
    }
    for (const auto& model : fs::directory_iterator(org.path(), ec)) {
      if (model.is_symlink(ec) || !model.is_directory(ec)) continue;
      if (!fs::is_regular_file(fs::symlink_status(model.path() / kMetadataFile, ec))) continue;
      try {
        found.push_back(model_id_of_schema1_folder(org_name, model.path().filename().string()));
      } catch (const CatalogError&) {
        // A folder whose name is no model id was never the catalog's.
      }
    }
  }
  return found;
}

// The verified file at its repo path in the old folder becomes blobs/<name> in the new one
// (when it is still there: a crashed run may have moved it already). True when the blob is
// in place afterwards.
bool move_to_blob(const Directory& old_model, const Directory& blobs, const ModelFile& file) {
  const auto [parent, name] = split_parent(file.path);
  const auto folder = old_model.descend(parent, false);
  const auto status = folder ? folder->status_of(name) : std::nullopt;
  if (status && S_ISREG(status->st_mode) &&
      static_cast<std::uint64_t>(status->st_size) == file.size) {
    folder->rename_to(name, blobs, blob_name(file));
  }
  const auto blob = blobs.status_of(blob_name(file));
  return blob && S_ISREG(blob->st_mode) && static_cast<std::uint64_t>(blob->st_size) == file.size;
}

// Parts an older hive kept beside their file ("<path>.part", "<path>.part.ranges") go to the
// same place in the new folder, where the download adopts them (staging.hpp).
void move_legacy_parts(const Directory& old_model, const Directory& new_model,
                       const ModelFile& file) {
  const auto [parent, name] = split_parent(file.path);
  const auto folder = old_model.descend(parent, false);
  if (!folder) return;
  for (const char* suffix : {".part.ranges", ".part"}) {
    const std::string part = std::string(name) + suffix;
    const auto status = folder->status_of(part);
    if (!status || !S_ISREG(status->st_mode)) continue;
    folder->rename_to(part, *new_model.descend(parent, true), part);
  }
}

// Removes the empty folders of the old tree, deepest first; true when nothing is left.
bool remove_if_empty(const Directory& folder, const std::string& name) {
  const auto child = folder.descend(name, false);
  if (!child) return true;
  for (const auto& entry : child->entry_names()) {
    const auto status = child->status_of(entry);
    if (status && S_ISDIR(status->st_mode)) remove_if_empty(*child, entry);
  }
  return ::unlinkat(folder.fd(), name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT;
}

ModelEntry schema2_entry(const ModelCatalog& catalog, ModelEntry entry) {
  const bool has_commit = is_commit_id(entry.commit);
  std::vector<ModelFile> linked;
  std::uint64_t size = 0;
  for (auto& file : entry.files) {
    file.blob = catalog.blob_path(entry.id, blob_name(file)).string();
    if (file.state == "verified") {
      linked.push_back(file);
      size += file.size;
    }
  }
  if (has_commit) {
    auto& revision = entry.revision_record(entry.commit);
    revision.status =
        entry.status == ModelStatus::ready ? ModelStatus::ready : ModelStatus::interrupted;
    revision.size = size;
    revision.files = std::move(linked);
    if (entry.status == ModelStatus::ready && entry.revision != entry.commit) {
      entry.refs[entry.revision] = entry.commit;
    }
  }
  entry.path = has_commit ? catalog.snapshot_dir(entry.id, entry.commit).string()
                          : catalog.model_dir(entry.id).string();
  return entry;
}

// One model: the steps in an order a crash can stop anywhere.
void migrate_model(const ModelCatalog& catalog, const ModelId& id, MigrationReport& report) {
  FileLock writing(catalog.lock_path(id));
  const Directory root = Directory::open(catalog.root(), false);
  const auto old_model = root.descend(id.schema1_folder(), false);
  if (!old_model) return;  // another process finished it while we waited
  const auto text = old_model->read_file(kMetadataFile, kMaxSchema1Bytes);
  if (!text) return;
  ModelEntry entry;
  try {
    entry = parse_model_entry(*text, true);
  } catch (const std::exception&) {
    report.leftovers.push_back(id.schema1_folder());  // unreadable: not ours to move
    return;
  }
  if (entry.id != id) {
    report.leftovers.push_back(id.schema1_folder());
    return;
  }
  const Directory new_model = *root.descend(id.folder(), true);
  // The working folder moves whole: parts resume, listings and chunk records stay valid.
  if (old_model->status_of(ModelCatalog::kWorkFolder) &&
      !new_model.status_of(ModelCatalog::kWorkFolder)) {
    old_model->rename_to(ModelCatalog::kWorkFolder, new_model, ModelCatalog::kWorkFolder);
  }
  const Directory work = *new_model.descend(ModelCatalog::kWorkFolder, true);
  const Directory blobs = *new_model.descend(kBlobsFolder, true);
  for (auto& file : entry.files) {
    move_legacy_parts(*old_model, new_model, file);
    if (file.state != "verified") continue;
    if (!is_blob_name(blob_name(file)) || !move_to_blob(*old_model, blobs, file)) {
      file.state = "pending";  // not on disk as recorded: the next download fetches it
      continue;
    }
    ++report.files;
    if (is_commit_id(entry.commit)) {
      link_snapshot_file(new_model, entry.commit, file.path, blob_name(file));
    }
  }
  blobs.sync();
  const bool whole = std::ranges::all_of(
      entry.files, [](const ModelFile& file) { return file.state == "verified"; });
  if (entry.status == ModelStatus::ready && !whole) {
    entry.status = ModelStatus::interrupted;
    entry.error =
        "files were missing when the cache moved to the Hugging Face layout; a new "
        "model_download fetches them";
  }
  const ModelEntry migrated = schema2_entry(catalog, entry);
  if (migrated.status == ModelStatus::ready && migrated.refs.contains(migrated.revision)) {
    write_ref(new_model, migrated.revision, migrated.commit, work);
  }
  new_model.replace_file(kMetadataFile, to_yaml(migrated), work);
  // The schema-1 entry goes last: until then a restart runs all of this again.
  old_model->remove_file(kMetadataFile);
  old_model->sync();
  const Directory org =
      *root.descend(id.schema1_folder().substr(0, id.schema1_folder().find('/')), false);
  if (!remove_if_empty(org, id.name)) report.leftovers.push_back(id.schema1_folder());
  ::unlinkat(root.fd(), id.schema1_folder().substr(0, id.schema1_folder().find('/')).c_str(),
             AT_REMOVEDIR);  // the org folder, when it held nothing else
  root.sync();
  report.models.push_back(id.str());
}

}  // namespace

MigrationReport migrate_schema1_models(const ModelCatalog& catalog) {
  MigrationReport report;
  std::error_code ec;
  if (!fs::exists(catalog.root(), ec)) return report;
  for (const auto& id : schema1_folders(catalog.root())) {
    migrate_model(catalog, id, report);
  }
  return report;
}

}  // namespace rbee::catalog
