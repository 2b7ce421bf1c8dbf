#pragma once
// RepoViews (internal): what this hive has of a repo at a revision, for the mirror. A branch or
// tag names the commit this hive downloaded for it; a full commit id names itself; nothing else
// matches (no guessing, no prefix ids). Snapshots are parsed once and kept while their file is
// unchanged.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <variant>

#include <sys/stat.h>

#include <rbee/catalog/model_catalog.hpp>
#include <rbee/provisioner/repo_snapshot.hpp>

namespace rbee::mirror {

enum class RepoMiss {
  no_repo,      // this hive has never listed the repo
  no_revision,  // it has, at another commit than the revision names
};

using RepoLookup = std::variant<std::shared_ptr<const provisioner::RepoSnapshot>, RepoMiss>;

// The files the catalog records as verified for a model, at each commit it holds.
struct VerifiedFiles {
  struct File {
    std::uint64_t size = 0;
    std::string blob;  // its name under blobs/
  };
  // commit → repo path → file
  std::unordered_map<std::string, std::unordered_map<std::string, File>> by_commit;
  std::map<std::string, std::string> refs;  // ref → commit
  const File* find(const std::string& commit, const std::string& path) const;
};

class RepoViews {
 public:
  RepoViews(const catalog::ModelCatalog& catalog, provisioner::ListingLimits limits)
      : catalog_(catalog), limits_(limits) {}

  RepoLookup find(const catalog::ModelId& id, const std::string& revision);
  // What the catalog says is verified; null without an entry. A resolve asks for every request
  // (and a waiting one every 50 ms): the entry (20 MiB at 100 000 files) is parsed only when
  // its metadata.yaml has changed.
  std::shared_ptr<const VerifiedFiles> verified_files(const catalog::ModelId& id);

 private:
  template <typename T>
  struct Cached {
    struct stat file {};
    std::shared_ptr<const T> value;
  };
  // The newest listing (`commit` empty) or the one of `commit`.
  std::shared_ptr<const provisioner::RepoSnapshot> load(const catalog::ModelId& id,
                                                        const std::string& commit);
  // The value cached for `id` while its file still has `status`, else `parse()`'s (cached;
  // a null result is not).
  template <typename T, typename Parse>
  std::shared_ptr<const T> cached(std::unordered_map<std::string, Cached<T>>& cache,
                                  const std::string& key, const struct stat& status, Parse parse);

  const catalog::ModelCatalog& catalog_;
  const provisioner::ListingLimits limits_;
  std::mutex mutex_;
  // by model id, or "id@commit" for a commit's listing
  std::unordered_map<std::string, Cached<provisioner::RepoSnapshot>> snapshots_;
  std::unordered_map<std::string, Cached<VerifiedFiles>> verified_;  // by model id
};

}  // namespace rbee::mirror
