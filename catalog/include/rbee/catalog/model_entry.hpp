#pragma once
// ModelEntry: what the catalog knows of one model; its YAML form is documented in SCHEMA.md.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rbee/catalog/model_id.hpp"

namespace rbee::catalog {

inline constexpr int kSchemaVersion = 1;

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
  friend bool operator==(const ModelFile&, const ModelFile&) = default;
};

struct ModelEntry {
  ModelId id;
  std::string source = "huggingface";
  std::string endpoint;
  std::string revision = "main";  // as requested
  std::string commit;             // as resolved by the Hub
  std::string path;               // absolute model directory
  ModelStatus status = ModelStatus::downloading;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
  std::string error;  // set when status is failed
  std::vector<ModelFile> files;
  std::int64_t added_at_ms = 0;
  std::int64_t updated_at_ms = 0;
  std::string last_job_id;

  double progress() const;  // bytes_done / bytes_total in 0..1; 1 when ready
  friend bool operator==(const ModelEntry&, const ModelEntry&) = default;
};

// The YAML document of metadata.yaml. Strings are double-quoted so every YAML reader reads
// them back as strings.
std::string to_yaml(const ModelEntry& entry);
// Throws std::runtime_error with the reason when the text is not a complete schema-1 entry.
ModelEntry parse_model_entry(std::string_view yaml);

}  // namespace rbee::catalog
