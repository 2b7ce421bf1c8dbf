#pragma once
// Removing revisions from the store (DESIGN §16): one commit (model_delete with "revision"), or
// the ones no ref names (model_prune, --keep-revisions). A revision goes in the order a reader
// can live with: its entry record says `deleting`, then the refs naming it, its snapshot, and
// the blobs no remaining snapshot links (the catalog's, or another tool's in a shared cache),
// then the record. A worker with a file open keeps reading it: the inode outlives the name.
//
// The caller holds the model's download lock, so no download writes the folder meanwhile.

#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "rbee/catalog/model_catalog.hpp"

namespace rbee::catalog {

struct RemovedRevisions {
  std::vector<std::string> commits;
  std::uint64_t bytes_freed = 0;  // of the blobs removed (a blob another name still holds: 0)
};

// The commit `revision` names for the model: a ref of its entry, or a commit it holds.
std::optional<std::string> commit_of(const ModelEntry& entry, std::string_view revision);

// Removes the revision `commit`; the entry moves to the revision its followed ref names, or to
// another ready one. Throws CatalogError (not_found when the entry has no such revision).
RemovedRevisions remove_revision(ModelCatalog& catalog, const ModelId& id,
                                 const std::string& commit, std::stop_token stop = {});

// Removes the revisions no ref names, but the `keep_unnamed` most recently added ready ones (and
// never the one the entry describes now). Returns what went.
RemovedRevisions prune_revisions(ModelCatalog& catalog, const ModelId& id, std::size_t keep_unnamed,
                                 std::stop_token stop = {});

}  // namespace rbee::catalog
