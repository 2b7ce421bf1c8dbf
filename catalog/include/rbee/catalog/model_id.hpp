#pragma once
// Model ids ("org/name") and file paths inside a model, validated before they touch the disk.

#include <optional>
#include <string>
#include <string_view>

#include "rbee/catalog/errors.hpp"

namespace rbee::catalog {

inline constexpr std::size_t kMaxModelIdLength = 96;  // the Hub's limit for a repo id
inline constexpr std::size_t kMaxRepoPathLength = 1024;
inline constexpr std::size_t kMaxRevisionLength = 255;

// The folder under the cache root that holds the models without an owner ("gpt2"): no Hub
// organisation can have this name (an org starts with a letter or digit), so "gpt2" and an
// org "gpt2"'s models never share a folder.
inline constexpr std::string_view kNoOwnerFolder = "_";

// "org/name", or a canonical id without an owner ("gpt2", "bert-base-uncased"): org empty.
struct ModelId {
  std::string org;  // empty for a canonical id without an owner
  std::string name;

  std::string str() const { return org.empty() ? name : org + "/" + name; }
  // The folder below the cache root that holds the model's folder: "org", or "_".
  std::string owner_folder() const { return org.empty() ? std::string(kNoOwnerFolder) : org; }
  // The model's folder below the cache root: "org/name", or "_/name" without an owner.
  std::string folder() const { return owner_folder() + "/" + name; }
  friend bool operator==(const ModelId&, const ModelId&) = default;
};

// "org/name" or "name" (the Hub's canonical models: gpt2, t5-small). Each part follows the
// Hub's rule [A-Za-z0-9][A-Za-z0-9._-]*, with no "--" or "..", not ending in '-' or '.', the
// whole at most kMaxModelIdLength. Throws CatalogError (invalid_model_id) naming what is
// wrong; the message quotes the input only when it is short and printable.
ModelId parse_model_id(std::string_view text);
// The id of the model folder `org_folder`/`name` (ModelId::folder()); throws like
// parse_model_id when the folder is no model's.
ModelId model_id_of_folder(std::string_view org_folder, std::string_view name);

// rbee's "org/name[:path/in/repo]": the model plus, optionally, the one file wanted.
struct ModelReference {
  ModelId id;
  std::optional<std::string> file;
};
ModelReference parse_model_reference(std::string_view text);

// A relative path inside a model directory: '/'-separated, no empty, "." or ".." segments, no
// leading '/', no backslash, no control characters, at most kMaxRepoPathLength, and not under
// the two names the hive keeps at the top of a model folder: metadata.yaml and .rbee (its
// working folder). Throws CatalogError (invalid_path).
void validate_repo_path(std::string_view path);

// A revision as git names refs (a branch, a tag, refs/pr/N, a commit): 1 to kMaxRevisionLength
// printable ASCII characters with no space, none of ~^:?*[\, no "..", "//" or "@{", not
// starting or ending with '/', not ending in '.' or ".lock". It becomes a URL segment, a
// catalog field and (DESIGN §16) a file under refs/. Throws CatalogError (invalid_revision).
void validate_revision(std::string_view revision);

}  // namespace rbee::catalog
