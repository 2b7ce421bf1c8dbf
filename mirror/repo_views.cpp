#include "repo_views.hpp"

#include <algorithm>

#include <rbee/catalog/repo_store.hpp>

namespace rbee::mirror {
namespace {

constexpr std::size_t kMaxCachedSnapshots = 256;

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

}  // namespace

RepoLookup RepoViews::find(const catalog::ModelId& id, const std::string& revision) {
  const auto snapshot = load(id, "");
  if (!snapshot) return RepoMiss::no_repo;
  const auto& revisions = snapshot->revisions;
  if (revision == snapshot->listing.commit ||
      std::find(revisions.begin(), revisions.end(), revision) != revisions.end()) {
    return snapshot;
  }
  // An older revision the store keeps beside the newest (DESIGN §16), by a ref or its commit.
  const auto verified = verified_files(id);
  if (!verified) return RepoMiss::no_revision;
  const auto ref = verified->refs.find(revision);
  const std::string commit = ref == verified->refs.end() ? revision : ref->second;
  if (!verified->by_commit.contains(commit)) return RepoMiss::no_revision;
  if (auto older = load(id, commit)) return older;
  return RepoMiss::no_revision;
}

std::shared_ptr<const provisioner::RepoSnapshot> RepoViews::load(const catalog::ModelId& id,
                                                                 const std::string& commit) {
  // The listing's file, looked at without following symlinks (the provisioner's own name).
  std::optional<catalog::Directory> folder;
  try {
    if (const auto model = catalog_.open_model_dir(id, false))
      folder = model->descend(commit.empty() ? ".rbee" : ".rbee/listings", false);
  } catch (const std::exception&) {
    return nullptr;  // a symlink where the folder should be: nothing this hive wrote
  }
  if (!folder || (!commit.empty() && !catalog::is_commit_id(commit))) return nullptr;
  const auto status = folder->status_of(commit.empty() ? "listing.json" : commit + ".json");
  if (!status) return nullptr;
  const std::string key = commit.empty() ? id.str() : id.str() + "@" + commit;
  return cached(snapshots_, key, *status,
                [&]() -> std::shared_ptr<const provisioner::RepoSnapshot> {
                  auto model = catalog_.open_model_dir(id, false);
                  if (!model) return nullptr;
                  auto loaded = provisioner::load_repo_snapshot(*model, limits_, commit);
                  if (!loaded) return nullptr;
                  return std::make_shared<const provisioner::RepoSnapshot>(std::move(*loaded));
                });
}

std::shared_ptr<const VerifiedFiles> RepoViews::verified_files(const catalog::ModelId& id) {
  const auto status = catalog_.entry_file_status(id);
  if (!status) return nullptr;
  return cached(verified_, id.str(), *status, [&]() -> std::shared_ptr<const VerifiedFiles> {
    const auto entry = catalog_.get(id);
    if (!entry) return nullptr;
    auto files = std::make_shared<VerifiedFiles>();
    const auto add = [&](const std::string& commit, const std::vector<catalog::ModelFile>& list) {
      auto& at_commit = files->by_commit[commit];
      for (const auto& file : list) {
        if (file.state == "verified") {
          at_commit.emplace(file.path, VerifiedFiles::File{file.size, catalog::blob_name(file)});
        }
      }
    };
    files->refs = entry->refs;
    add(entry->commit, entry->files);  // the current download's, verified so far
    for (const auto& revision : entry->revisions) {
      if (revision.status == catalog::ModelStatus::ready) add(revision.commit, revision.files);
    }
    return files;
  });
}

const VerifiedFiles::File* VerifiedFiles::find(const std::string& commit,
                                               const std::string& path) const {
  const auto at_commit = by_commit.find(commit);
  if (at_commit == by_commit.end()) return nullptr;
  const auto file = at_commit->second.find(path);
  return file == at_commit->second.end() ? nullptr : &file->second;
}

template <typename T, typename Parse>
std::shared_ptr<const T> RepoViews::cached(std::unordered_map<std::string, Cached<T>>& cache,
                                           const std::string& key, const struct stat& status,
                                           Parse parse) {
  {
    std::lock_guard lock(mutex_);
    const auto found = cache.find(key);
    if (found != cache.end() && same_file(found->second.file, status)) return found->second.value;
  }
  // Parsed after the look at the file: if it changes in between, the next look parses again.
  std::shared_ptr<const T> value = parse();
  if (!value) return nullptr;
  std::lock_guard lock(mutex_);
  if (cache.size() >= kMaxCachedSnapshots) cache.clear();
  cache[key] = {status, value};
  return value;
}

}  // namespace rbee::mirror
