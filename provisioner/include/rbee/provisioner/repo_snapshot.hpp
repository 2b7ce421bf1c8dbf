#pragma once
// RepoSnapshot: the Hub's listing of a repo at the commit this hive downloaded it from, kept in
// the model's working folder (<model>/.rbee/listing.json) so the mirror (DESIGN §13) can answer
// the Hub's read API for it: the whole repo at that commit, not only the files this hive
// selected, and the revisions (branches, tags) that resolved to that commit here.
//
// The file is the Hub's own listing JSON plus "rbee_revisions"; it is read back through
// parse_listing, as untrusted as any answer of the Hub (the cache may be shared).

#include <optional>
#include <string>
#include <vector>

#include <rbee/catalog/directory.hpp>

#include "rbee/provisioner/listing.hpp"

namespace rbee::provisioner {

struct RepoSnapshot {
  RepoInfo listing;
  std::vector<std::string> revisions;  // as asked: "main", "v1.0", a commit id…
};

// The listing as the Hub sends it with ?blobs=true (and "rbee_revisions").
std::string snapshot_json(const RepoSnapshot& snapshot);

// Records that `revision` resolved to `listing.commit`: the snapshot of the same commit keeps
// its other revisions; one of another commit is replaced. Returns the snapshot it replaced (to
// put back with write_repo_snapshot if the attempt comes to nothing). Atomic (temp file,
// fsync, rename). Throws catalog::CatalogError.
std::optional<RepoSnapshot> record_repo_snapshot(const catalog::Directory& model,
                                                 const RepoInfo& listing,
                                                 const std::string& revision,
                                                 const ListingLimits& limits);

// Writes `snapshot` as the model's (and as its commit's, .rbee/listings/<commit>.json),
// atomically. Throws catalog::CatalogError.
void write_repo_snapshot(const catalog::Directory& model, const RepoSnapshot& snapshot);

// The newest listing, or with `commit` the one of that commit; nullopt when there is none, or
// when it is not a valid listing (of that commit).
std::optional<RepoSnapshot> load_repo_snapshot(const catalog::Directory& model,
                                               const ListingLimits& limits,
                                               const std::string& commit = "");

}  // namespace rbee::provisioner
