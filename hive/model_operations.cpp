#include "rbee/hive/model_operations.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <rbee/catalog/file_lock.hpp>

#include "rbee/hive/api_json.hpp"

namespace rbee::hive {
namespace {

using catalog::ModelId;
using jobs::JobContext;
using jobs::JobError;

constexpr std::size_t kMaxRevisionLength = 256;
constexpr std::size_t kMaxGlobLength = 1024;

void validate_text_field(std::string_view field, std::string_view value, std::size_t max_length) {
  const bool printable = std::all_of(value.begin(), value.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  });
  if (!printable || value.size() > max_length) {
    throw jobs::OperationError(
        jobs::OperationErrorCode::invalid_field,
        fmt::format("field '{}' must be printable and at most {} characters", field, max_length));
  }
}

ModelId model_id_of(const jobs::Operation& operation) {
  return std::visit(
      [](const auto& op) -> ModelId {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, jobs::ModelDownload>) {
          return catalog::parse_model_reference(op.model).id;
        } else if constexpr (std::is_same_v<T, jobs::ModelList> ||
                             std::is_same_v<T, jobs::UnservedOperation>) {
          return {};
        } else {
          return catalog::parse_model_id(op.id);
        }
      },
      operation);
}

// The unfinished download job of `id`, if any: deleting under it would pull files from
// under a writer.
std::shared_ptr<jobs::Job> active_download_of(const jobs::JobRegistry& registry,
                                              const ModelId& id) {
  for (const auto& job : registry.list()) {
    const auto* download = std::get_if<jobs::ModelDownload>(&job->operation());
    if (download && !jobs::is_finished(job->status().state) &&
        model_id_of(job->operation()) == id) {
      return job;
    }
  }
  return nullptr;
}

void model_list(JobContext& context, const catalog::ModelCatalog& catalog) {
  nlohmann::json models = nlohmann::json::array();
  for (const auto& entry : catalog.list()) models.push_back(to_json(entry));
  context.narrate(
      "hive", "model_list", "catalog",
      fmt::format("{} model{} in the catalog", models.size(), models.size() == 1 ? "" : "s"));
  context.emit_data("model_list", {{"models", std::move(models)}});
}

void model_get(JobContext& context, const catalog::ModelCatalog& catalog) {
  const ModelId id = model_id_of(context.operation());
  auto entry = catalog.get(id);
  if (!entry) {
    throw JobError("model_not_found", fmt::format("model {} is not in the catalog", id.str()));
  }
  context.narrate("hive", "model_get", id.str(),
                  fmt::format("{} is {}", id.str(), catalog::to_string(entry->status)));
  context.emit_data("model_get", {{"model", to_json(*entry)}});
}

void model_delete(JobContext& context, catalog::ModelCatalog& catalog,
                  const jobs::JobRegistry& registry) {
  const ModelId id = model_id_of(context.operation());
  if (auto download = active_download_of(registry, id)) {
    throw JobError("model_busy", fmt::format("model {} is being downloaded by {}; cancel that "
                                             "job first (DELETE /v1/jobs/{})",
                                             id.str(), download->id(), download->id()));
  }
  // The download lock, held for the whole delete: no download of this hive or another (sharing
  // the cache) can write the folder while it goes, nor start before the entry is gone.
  const auto download_lock = catalog::FileLock::try_acquire(catalog.download_lock_path(id));
  if (!download_lock) {
    throw JobError("model_busy",
                   fmt::format("model {} is being downloaded (by another hive sharing the cache, "
                               "or a job of this one); try again when it has finished",
                               id.str()));
  }
  context.narrate("hive", "model_delete", id.str(), fmt::format("Deleting {}", id.str()));
  const auto entry = catalog.get(id);
  if (!catalog.remove(id, context.cancellation().stop_token())) {
    throw JobError("model_not_found", fmt::format("model {} is not in the catalog", id.str()));
  }
  const std::uint64_t size = entry ? entry->bytes_total : 0;
  context.narrate("hive", "model_deleted", id.str(),
                  fmt::format("Deleted {} and its files ({} bytes)", id.str(), size));
  context.emit_data("model_delete", {{"id", id.str()}, {"deleted", true}});
}

}  // namespace

void validate_operation(const jobs::Operation& operation) {
  model_id_of(operation);  // throws for a hostile id or file path
  if (const auto* download = std::get_if<jobs::ModelDownload>(&operation)) {
    validate_text_field("revision", download->revision, kMaxRevisionLength);
    for (const auto& glob : download->include) validate_text_field("include", glob, kMaxGlobLength);
    for (const auto& glob : download->exclude) validate_text_field("exclude", glob, kMaxGlobLength);
  }
}

void register_model_operations(jobs::JobRouter& router, catalog::ModelCatalog& catalog,
                               const jobs::JobRegistry& registry,
                               provisioner::ModelProvisioner& provisioner) {
  router.route("model_list", [&catalog](JobContext& context) { model_list(context, catalog); });
  router.route("model_get", [&catalog](JobContext& context) { model_get(context, catalog); });
  router.route("model_delete", [&catalog, &registry](JobContext& context) {
    model_delete(context, catalog, registry);
  });
  router.route(
      "model_download",
      [&provisioner](JobContext& context) {
        const auto& op = std::get<jobs::ModelDownload>(context.operation());
        provisioner.download(
            {op.model, op.revision, op.include, op.exclude, context.job_id(), op.connections},
            context.cancellation().stop_token());
      },
      jobs::Lane::long_running);
}

}  // namespace rbee::hive
