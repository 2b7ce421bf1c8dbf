#pragma once
// ModelEntry: what the catalog knows of one model; its YAML form is documented in SCHEMA.md.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "rbee/catalog/model_id.hpp"

namespace rbee::catalog {

// Schema 2 is the Hugging Face cache layout (DESIGN §16); schema 1 documents are still read, by
// the migration that moves a schema-1 cache into that layout.
inline constexpr int kSchemaVersion = 2;

// rbee's Ready / Downloading{progress} / Failed{error}, plus cancelled, and interrupted for a
// download a crashed hive left behind (resumable), and deleting while model_delete removes the
// files (the entry goes last, so a crash never leaves "ready" over missing files).
enum class ModelStatus { downloading, ready, failed, cancelled, interrupted, deleting };

std::string_view to_string(ModelStatus status);
ModelStatus parse_model_status(std::string_view text);  // throws std::invalid_argument

struct ModelFile {
  std::string path;  // relative to the model directory, as in the repo
  std::uint64_t size = 0;
  std::string sha256;             // LFS files
  std::string etag;               // git blob sha1 for regular files
  std::string state = "pending";  // pending | downloading | verified | failed
  std::string blob;               // absolute path of its blob (where the bytes are once verified)
  friend bool operator==(const ModelFile&, const ModelFile&) = default;
};

// The name of a file's blob under blobs/: its sha256 (LFS) or git blob sha1, as the Hub's ETag
// and huggingface_hub name it.
inline const std::string& blob_name(const ModelFile& file) {
  return file.sha256.empty() ? file.etag : file.sha256;
}

// One commit of the model in the store: its snapshot folder links every file to its blob.
struct RevisionRecord {
  std::string commit;
  ModelStatus status = ModelStatus::downloading;  // ready once every file is linked
  std::uint64_t size = 0;
  std::string error;  // why the last attempt at this commit failed
  std::vector<ModelFile> files;
  std::int64_t added_at_ms = 0;  // when the hive first recorded the commit
  friend bool operator==(const RevisionRecord&, const RevisionRecord&) = default;
};

struct ModelEntry {
  ModelId id;
  std::string source = "huggingface";
  std::string endpoint;
  std::string revision = "main";  // as requested
  std::string commit;             // as resolved by the Hub
  std::string path;               // absolute snapshot folder of `commit`: what a worker loads
  ModelStatus status = ModelStatus::downloading;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
  std::string error;  // set when status is failed
  std::vector<ModelFile> files;
  std::int64_t added_at_ms = 0;
  std::int64_t updated_at_ms = 0;
  std::string last_job_id;
  std::map<std::string, std::string> refs;  // ref (branch, tag, refs/pr/N) → commit
  std::vector<RevisionRecord> revisions;    // sorted by commit

  double progress() const;  // bytes_done / bytes_total in 0..1; 1 when ready
  // The revision record of `commit`, or null.
  const RevisionRecord* find_revision(std::string_view commit) const;
  // The revision record of `commit`, created when missing.
  RevisionRecord& revision_record(const std::string& commit);
  // The current download ended without a whole revision (failed, cancelled, interrupted): the
  // entry says so, and so does the record of the commit it fetched unless that one is ready.
  void end_download(ModelStatus ended, std::string reason);
  friend bool operator==(const ModelEntry&, const ModelEntry&) = default;
};

// The YAML document of metadata.yaml. Strings are double-quoted so every YAML reader reads
// them back as strings.
std::string to_yaml(const ModelEntry& entry);
// Throws std::runtime_error with the reason when the text is not a complete schema-2 entry (or,
// with `schema1` set, a complete schema-1 entry: what the migration reads).
ModelEntry parse_model_entry(std::string_view yaml, bool schema1 = false);

}  // namespace rbee::catalog
