#include "rbee/jobs/operation.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <rbee/narration/sanitize.hpp>

namespace rbee::jobs {
namespace {

constexpr std::array<std::string_view, 5> kSupported = {"model_download", "model_list", "model_get",
                                                        "model_delete", "model_prune"};

// Operations of rbee's contract (bin/97_contracts/operations-contract, and the names older rbee
// releases used) that this hive does not serve: accepted, then failed with a clear reason.
constexpr std::array<std::string_view, 40> kOtherRbeeOperations = {
    "status",
    "infer",
    "image_generation",
    "image_transform",
    "image_inpaint",
    "rhai_script_save",
    "rhai_script_test",
    "rhai_script_get",
    "rhai_script_list",
    "rhai_script_delete",
    "worker_catalog_list",
    "worker_catalog_get",
    "worker_list_installed",
    "worker_installed_get",
    "worker_install",
    "worker_remove",
    "worker_spawn",
    "worker_process_list",
    "worker_process_get",
    "worker_process_delete",
    "model_load",
    "model_unload",
    "queen_check",
    "hive_check",
    "worker_list",
    "worker_get",
    "worker_delete",
    "active_worker_list",
    "active_worker_get",
    "active_worker_retire",
    "hive_start",
    "hive_stop",
    "hive_list",
    "hive_get",
    "hive_status",
    "hive_install",
    "hive_uninstall",
    "hive_update",
    "hive_refresh_capabilities",
    "hive_delete",
};

OperationError error(OperationErrorCode code, std::string message) {
  return OperationError(code, std::move(message));
}

std::string supported_list() {
  return fmt::format("{}", fmt::join(kSupported, ", "));
}

std::string optional_string(const nlohmann::json& body, const char* field, std::string fallback) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_string()) {
    throw error(OperationErrorCode::invalid_field,
                fmt::format("field '{}' must be a string", field));
  }
  return it->get<std::string>();
}

std::string required_string(const nlohmann::json& body, const char* field) {
  std::string value = optional_string(body, field, "");
  if (value.empty()) {
    throw error(OperationErrorCode::missing_field,
                fmt::format("field '{}' is required for operation '{}'", field,
                            body.at("operation").get<std::string>()));
  }
  return value;
}

std::vector<std::string> string_list(const nlohmann::json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return {};
  if (it->is_string()) return {it->get<std::string>()};
  auto bad = [&] {
    return error(OperationErrorCode::invalid_field,
                 fmt::format("field '{}' must be a list of non-empty strings", field));
  };
  if (!it->is_array()) throw bad();
  std::vector<std::string> values;
  for (const auto& item : *it) {
    if (!item.is_string() || item.get_ref<const std::string&>().empty()) throw bad();
    values.push_back(item.get<std::string>());
  }
  return values;
}

constexpr std::size_t kMaxFallbacks = 16;

std::optional<int> optional_connections(const nlohmann::json& body) {
  auto it = body.find("connections");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 64) {
    throw error(OperationErrorCode::invalid_field,
                "field 'connections' must be an integer from 1 to 64");
  }
  return it->get<int>();
}

// A string field that may be absent (or null); when present it must be a non-empty string.
std::optional<std::string> optional_nonempty_string(const nlohmann::json& body,
                                                    std::string_view key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    throw error(OperationErrorCode::invalid_field,
                fmt::format("field '{}' must be a non-empty string", key));
  }
  return it->get<std::string>();
}

// rbee's clients always send hive_id; this hive serves only itself, so it is kept for the
// record and defaults to "localhost" rather than refusing a job over it.
std::string hive_id(const nlohmann::json& body) {
  return optional_string(body, "hive_id", "localhost");
}

Operation parse_object(const nlohmann::json& body) {
  auto op = body.find("operation");
  if (op == body.end()) {
    throw error(
        OperationErrorCode::missing_field,
        fmt::format("field 'operation' is required; supported operations: {}", supported_list()));
  }
  if (!op->is_string()) {
    throw error(OperationErrorCode::invalid_field, "field 'operation' must be a string");
  }
  const auto& name = op->get_ref<const std::string&>();
  if (name == "model_download") {
    ModelDownload download{hive_id(body),
                           required_string(body, "model"),
                           optional_string(body, "revision", "main"),
                           string_list(body, "include"),
                           string_list(body, "exclude"),
                           optional_connections(body),
                           string_list(body, "fallbacks")};
    if (download.fallbacks.size() > kMaxFallbacks) {
      throw error(OperationErrorCode::invalid_field,
                  fmt::format("field 'fallbacks' lists at most {} models", kMaxFallbacks));
    }
    if (download.revision.empty()) {
      throw error(OperationErrorCode::invalid_field, "field 'revision' must not be empty");
    }
    return download;
  }
  if (name == "model_list") return ModelList{hive_id(body)};
  if (name == "model_get") return ModelGet{hive_id(body), required_string(body, "id")};
  if (name == "model_delete") {
    return ModelDelete{hive_id(body), required_string(body, "id"),
                       optional_nonempty_string(body, "revision")};
  }
  if (name == "model_prune") return ModelPrune{hive_id(body), optional_nonempty_string(body, "id")};

  if (std::find(kOtherRbeeOperations.begin(), kOtherRbeeOperations.end(), name) !=
      kOtherRbeeOperations.end()) {
    return UnservedOperation{std::string(name)};
  }
  throw error(OperationErrorCode::unknown_operation,
              fmt::format("unknown operation '{}'; this hive supports: {}",
                          narration::sanitize(name, 64), supported_list()));
}

}  // namespace

std::string_view to_string(OperationErrorCode code) {
  switch (code) {
    case OperationErrorCode::invalid_json:
      return "invalid_json";
    case OperationErrorCode::missing_field:
      return "missing_field";
    case OperationErrorCode::invalid_field:
      return "invalid_field";
    case OperationErrorCode::unknown_operation:
      return "unknown_operation";
  }
  return "invalid_request";
}

std::span<const std::string_view> supported_operations() {
  return kSupported;
}

static_assert(std::variant_size_v<Operation> == kSupported.size() + 1,
              "kSupported lists the served Operation alternatives in variant order");

std::string_view operation_name(const Operation& operation) {
  if (const auto* unserved = std::get_if<UnservedOperation>(&operation)) return unserved->name;
  return kSupported[operation.index()];
}

std::string unserved_message(std::string_view name) {
  return fmt::format("this hive does not serve the operation '{}'; it serves: {}", name,
                     supported_list());
}

Operation parse_operation(std::string_view body) {
  nlohmann::json json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    throw error(OperationErrorCode::invalid_json, "the request body is not valid JSON");
  }
  if (!json.is_object()) {
    throw error(OperationErrorCode::invalid_json,
                fmt::format("the request body must be a JSON object, not {}", json.type_name()));
  }
  return parse_object(json);
}

nlohmann::json to_json(const Operation& operation) {
  return std::visit(
      [&](const auto& op) -> nlohmann::json {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, UnservedOperation>) {
          return {{"operation", op.name}};
        } else {
          nlohmann::json json = {{"operation", operation_name(operation)}, {"hive_id", op.hive_id}};
          if constexpr (std::is_same_v<T, ModelDownload>) {
            json["model"] = op.model;
            json["revision"] = op.revision;
            json["include"] = op.include;
            json["exclude"] = op.exclude;
            if (op.connections) json["connections"] = *op.connections;
            if (!op.fallbacks.empty()) json["fallbacks"] = op.fallbacks;
            if (op.pull_through) json["pull_through"] = true;
          } else if constexpr (std::is_same_v<T, ModelGet>) {
            json["id"] = op.id;
          } else if constexpr (std::is_same_v<T, ModelDelete>) {
            json["id"] = op.id;
            if (op.revision) json["revision"] = *op.revision;
          } else if constexpr (std::is_same_v<T, ModelPrune>) {
            if (op.id) json["id"] = *op.id;
          }
          return json;
        }
      },
      operation);
}

}  // namespace rbee::jobs
