#pragma once
// Operation: what a job does, parsed from rbee's wire format: one JSON object, internally
// tagged by "operation" (snake_case), its fields flat beside it; unknown fields are ignored.

#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace rbee::jobs {

struct ModelDownload {
  std::string hive_id;
  std::string model;  // "org/name" or rbee's "org/name:path/in/repo"
  std::string revision = "main";
  std::vector<std::string> include;  // fnmatch globs; empty means everything
  std::vector<std::string> exclude;  // fnmatch globs; wins over include
  std::optional<int> connections;    // per-job override of connections per large file (1–64)
  // Models ("org/name" or "org/name:file") tried in order when the one before fails for a
  // reason another model can cure: not found, gated, refused, not enough disk.
  std::vector<std::string> fallbacks;
  // Submitted by the hive's mirror for a peer (pull-through), never parsed from a request.
  bool pull_through = false;
};
struct ModelList {
  std::string hive_id;
};
struct ModelGet {
  std::string hive_id;
  std::string id;
};
struct ModelDelete {
  std::string hive_id;
  std::string id;
  std::optional<std::string> revision;  // one revision (a ref or a commit) instead of the model
};
// Removes the revisions no ref names, and the blobs only they held (DESIGN §16).
struct ModelPrune {
  std::string hive_id;
  std::optional<std::string> id;  // one model; every model without it
};

// An operation of rbee's contract that this hive does not serve (worker_spawn, model_load, …).
// It is accepted as a job that fails at once with unserved_message(): rbee's clients read only
// a job's stream, never the status of POST /v1/jobs, so a 400 would reach their users as
// "missing field `job_id`" instead of the reason.
struct UnservedOperation {
  std::string name;
};

using Operation =
    std::variant<ModelDownload, ModelList, ModelGet, ModelDelete, ModelPrune, UnservedOperation>;

enum class OperationErrorCode {
  invalid_json,       // not JSON, or not a JSON object
  missing_field,      // a required field is absent or empty
  invalid_field,      // a field has the wrong type or an unusable value
  unknown_operation,  // no rbee component knows this operation
};

std::string_view to_string(OperationErrorCode code);

class OperationError : public std::runtime_error {
 public:
  OperationError(OperationErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  OperationErrorCode code() const { return code_; }

 private:
  OperationErrorCode code_;
};

// Operations this hive runs, in the order error messages list them.
std::span<const std::string_view> supported_operations();

std::string_view operation_name(const Operation& operation);

// "this hive does not serve the operation 'x'; it serves: model_download, …"
std::string unserved_message(std::string_view name);

// Throws OperationError. Checks structure and types only; the hive validates model ids.
Operation parse_operation(std::string_view body);

nlohmann::json to_json(const Operation& operation);

}  // namespace rbee::jobs
