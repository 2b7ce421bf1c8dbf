#pragma once
// The move of a schema-1 cache (DESIGN §4: <root>/<org>/<name>/ with the files at their repo
// paths) into the Hugging Face cache layout of schema 2 (DESIGN §16), at the hive's start.
//
// Renames only: a verified file becomes its blob, its snapshot link and the ref are made, the
// working folder (.rbee/: parts, sidecars, listings, chunk records) moves whole, and the schema-2
// entry is written before the schema-1 one is removed. No byte is copied or downloaded. A crash
// (SIGKILL) at any point leaves the schema-1 entry in place until the very end, so the next
// start runs the same steps again: each one is done already or done now (idempotent).

#include <cstddef>
#include <string>
#include <vector>

#include "rbee/catalog/model_catalog.hpp"

namespace rbee::catalog {

struct MigrationReport {
  std::vector<std::string> models;  // ids moved into the new layout
  std::size_t files = 0;            // verified files that became blobs
  // Schema-1 folders that kept something the migration does not know (a file no entry names):
  // left where they were, named for the operator.
  std::vector<std::string> leftovers;
};

// Moves every schema-1 model under the catalog's root; another process migrating (or writing)
// the same model at once is waited for. Throws FileSystemError when the disk refuses a step
// (the next start finishes it).
MigrationReport migrate_schema1_models(const ModelCatalog& catalog);

}  // namespace rbee::catalog
