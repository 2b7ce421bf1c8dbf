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

// A model's folder under the cache root is the Hugging Face cache's (DESIGN §16):
// "models--{org}--{name}", or "models--{name}" for an id without an owner ("gpt2"). Ids never
// hold "--" (parse_model_id), so the folder name maps back to exactly one id.
inline constexpr std::string_view kRepoFolderPrefix = "models--";
// Schema 1 (DESIGN §4, before §16) kept a model in "<org>/<name>", and one without an owner in
// "_/<name>": only the migration still reads these.
inline constexpr std::string_view kSchema1NoOwnerFolder = "_";

// "org/name", or a canonical id without an owner ("gpt2", "bert-base-uncased"): org empty.
struct ModelId {
  std::string org;  // empty for a canonical id without an owner
  std::string name;

  std::string str() const { return org.empty() ? name : org + "/" + name; }
  // The model's folder below the cache root: "models--org--name", or "models--name".
  std::string folder() const {
    return std::string(kRepoFolderPrefix) + (org.empty() ? name : org + "--" + name);
  }
  // Where schema 1 kept it: "org/name", or "_/name" without an owner.
  std::string schema1_folder() const {
    return (org.empty() ? std::string(kSchema1NoOwnerFolder) : org) + "/" + name;
  }
  friend bool operator==(const ModelId&, const ModelId&) = default;
};

// "org/name" or "name" (the Hub's canonical models: gpt2, t5-small). Each part follows the
// Hub's rule [A-Za-z0-9][A-Za-z0-9._-]*, with no "--" or "..", not ending in '-' or '.', the
// whole at most kMaxModelIdLength. Throws CatalogError (invalid_model_id) naming what is
// wrong; the message quotes the input only when it is short and printable.
ModelId parse_model_id(std::string_view text);
// The id of the model folder `folder` (ModelId::folder()); throws like parse_model_id when the
// folder is no model's (a dataset's, a space's, anything else).
ModelId model_id_of_folder(std::string_view folder);
// The id of the schema-1 folder `org_folder`/`name` (ModelId::schema1_folder()).
ModelId model_id_of_schema1_folder(std::string_view org_folder, std::string_view name);

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
// starting or ending with '/', not ending in '.' or ".lock", no part starting with '.'. It becomes
// a URL segment, a catalog field and (DESIGN §16) a file under refs/. Throws CatalogError
// (invalid_revision).
void validate_revision(std::string_view revision);

}  // namespace rbee::catalog
