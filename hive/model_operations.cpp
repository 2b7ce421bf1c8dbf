#include "rbee/hive/model_operations.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <rbee/catalog/file_lock.hpp>
#include <rbee/catalog/revisions.hpp>
#include <rbee/narration/human_units.hpp>

#include "rbee/hive/api_json.hpp"

namespace rbee::hive {
namespace {

using catalog::ModelId;
using jobs::JobContext;
using jobs::JobError;

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
        } else if constexpr (std::is_same_v<T, jobs::ModelPrune>) {
          return op.id ? catalog::parse_model_id(*op.id) : ModelId{};
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

// Failures another model can cure: this one is missing, closed to this hive, too large for
// the disk, or (offline) not in the cache.
bool another_model_may_cure(const std::string& kind) {
  static const std::set<std::string, std::less<>> kCurable = {
      "repo_not_found", "revision_not_found", "entry_not_found", "gated_repo",
      "unauthorized",   "forbidden",          "not_enough_disk", "not_in_cache"};
  return kCurable.contains(kind);
}

// The model, then its fallbacks in order, until one is installed. Every failure leaves as a
// JobError whose code is the provisioner's error kind (GET /v1/jobs/{id} shows it).
void model_download(JobContext& context, provisioner::ModelProvisioner& provisioner) {
  const auto& op = std::get<jobs::ModelDownload>(context.operation());
  std::vector<std::string> candidates{op.model};
  candidates.insert(candidates.end(), op.fallbacks.begin(), op.fallbacks.end());
  nlohmann::json skipped = nlohmann::json::array();
  std::string reasons;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const std::string& model = candidates[i];
    // The revision names the primary's; a fallback is another repo, downloaded at its main.
    provisioner::DownloadRequest request{model,
                                         i == 0 ? op.revision : "main",
                                         op.include,
                                         op.exclude,
                                         context.job_id(),
                                         op.connections,
                                         op.pull_through};
    try {
      provisioner.download(request, context.cancellation().stop_token());
      context.emit_data("model_download", {{"model", model},
                                           {"requested", op.model},
                                           {"fallback", i > 0},
                                           {"skipped", std::move(skipped)}});
      return;
    } catch (const provisioner::DownloadCancelled&) {
      throw;
    } catch (const std::exception& error) {
      const std::string kind = provisioner::error_kind(error);
      const std::string reason = context.clean(error.what());
      reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", model, reason);
      if (i + 1 == candidates.size() || !another_model_may_cure(kind)) {
        if (i == 0) throw JobError(kind, error.what());
        throw JobError(kind, fmt::format("no model could be installed: {}", reasons));
      }
      skipped.push_back({{"model", model}, {"error_code", kind}, {"reason", reason}});
      context.narrate("provisioner", "download_fallback", model,
                      fmt::format("{} cannot be installed ({}: {}); falling back to {}", model,
                                  kind, reason, candidates[i + 1]),
                      narration::Level::warn);
    }
  }
}

// The download lock, held for the whole change: no download of this hive or another (sharing
// the cache) can write the folder while files go, nor start before the entry says what is left.
std::unique_ptr<catalog::FileLock> lock_for_removal(const catalog::ModelCatalog& catalog,
                                                    const jobs::JobRegistry& registry,
                                                    const ModelId& id) {
  if (auto download = active_download_of(registry, id)) {
    throw JobError("model_busy", fmt::format("model {} is being downloaded by {}; cancel that "
                                             "job first (DELETE /v1/jobs/{})",
                                             id.str(), download->id(), download->id()));
  }
  auto lock = catalog::FileLock::try_acquire(catalog.download_lock_path(id));
  if (!lock) {
    throw JobError("model_busy",
                   fmt::format("model {} is being downloaded (by another hive sharing the cache, "
                               "or a job of this one); try again when it has finished",
                               id.str()));
  }
  return lock;
}

std::string describe_removed(const catalog::RemovedRevisions& removed) {
  std::string commits;
  for (const auto& commit : removed.commits) {
    commits += fmt::format("{}{}", commits.empty() ? "" : ", ", commit.substr(0, 12));
  }
  return fmt::format("{} revision{} ({}), {} freed", removed.commits.size(),
                     removed.commits.size() == 1 ? "" : "s", commits.empty() ? "none" : commits,
                     narration::format_bytes(removed.bytes_freed));
}

// One revision of the model: its snapshot, the refs naming it, the blobs only it linked. The
// model's last revision takes the model with it.
void delete_revision(JobContext& context, catalog::ModelCatalog& catalog, const ModelId& id,
                     const std::string& revision) {
  const auto entry = catalog.get(id);
  if (!entry) {
    throw JobError("model_not_found", fmt::format("model {} is not in the catalog", id.str()));
  }
  const auto commit = catalog::commit_of(*entry, revision);
  if (!commit) {
    throw JobError("revision_not_found",
                   fmt::format("model {} has no revision {}", id.str(), context.clean(revision)));
  }
  context.narrate("hive", "model_delete", id.str(),
                  fmt::format("Deleting revision {} of {}", commit->substr(0, 12), id.str()));
  const auto removed =
      catalog::remove_revision(catalog, id, *commit, context.cancellation().stop_token());
  context.narrate("hive", "model_deleted", id.str(),
                  fmt::format("Deleted {} of {}", describe_removed(removed), id.str()));
  context.emit_data("model_delete", {{"id", id.str()},
                                     {"deleted", true},
                                     {"revision", *commit},
                                     {"bytes_freed", removed.bytes_freed}});
}

void model_delete(JobContext& context, catalog::ModelCatalog& catalog,
                  const jobs::JobRegistry& registry, provisioner::ModelProvisioner& provisioner) {
  const ModelId id = model_id_of(context.operation());
  const auto lock = lock_for_removal(catalog, registry, id);
  const auto& op = std::get<jobs::ModelDelete>(context.operation());
  if (op.revision) {
    const auto entry = catalog.get(id);
    const bool last = entry && entry->revisions.size() == 1 &&
                      catalog::commit_of(*entry, *op.revision) == entry->revisions[0].commit;
    if (!last) return delete_revision(context, catalog, id, *op.revision);
  }
  context.narrate("hive", "model_delete", id.str(), fmt::format("Deleting {}", id.str()));
  const auto entry = catalog.get(id);
  const bool removed = catalog.remove(id, context.cancellation().stop_token());
  provisioner.forget_model_files(id);
  if (!removed) {
    throw JobError("model_not_found", fmt::format("model {} is not in the catalog", id.str()));
  }
  const std::uint64_t size = entry ? entry->bytes_total : 0;
  context.narrate("hive", "model_deleted", id.str(),
                  fmt::format("Deleted {} and its files ({} bytes)", id.str(), size));
  context.emit_data("model_delete", {{"id", id.str()}, {"deleted", true}});
}

// The revisions no ref names, of one model or of every model.
void model_prune(JobContext& context, catalog::ModelCatalog& catalog,
                 const jobs::JobRegistry& registry) {
  const auto& op = std::get<jobs::ModelPrune>(context.operation());
  std::vector<ModelId> ids;
  if (op.id) {
    ids.push_back(model_id_of(context.operation()));
    if (!catalog.get(ids.back())) {
      throw JobError("model_not_found",
                     fmt::format("model {} is not in the catalog", ids.back().str()));
    }
  } else {
    for (const auto& entry : catalog.list()) ids.push_back(entry.id);
  }
  nlohmann::json pruned = nlohmann::json::array();
  std::uint64_t freed = 0;
  for (const auto& id : ids) {
    std::unique_ptr<catalog::FileLock> lock;
    try {
      lock = lock_for_removal(catalog, registry, id);
    } catch (const JobError& busy) {
      if (op.id) throw;
      context.narrate("hive", "model_prune_skipped", id.str(), busy.what(), narration::Level::warn);
      continue;
    }
    const auto removed =
        catalog::prune_revisions(catalog, id, 0, context.cancellation().stop_token());
    freed += removed.bytes_freed;
    context.narrate("hive", "model_pruned", id.str(),
                    fmt::format("Pruned {}: {}", id.str(), describe_removed(removed)));
    pruned.push_back(
        {{"id", id.str()}, {"revisions", removed.commits}, {"bytes_freed", removed.bytes_freed}});
  }
  context.narrate("hive", "model_prune", "catalog",
                  fmt::format("Pruned {} model{}: {} freed", ids.size(), ids.size() == 1 ? "" : "s",
                              narration::format_bytes(freed)));
  context.emit_data("model_prune", {{"models", std::move(pruned)}, {"bytes_freed", freed}});
}

}  // namespace

void validate_operation(const jobs::Operation& operation) {
  model_id_of(operation);  // throws for a hostile id or file path
  if (const auto* remove = std::get_if<jobs::ModelDelete>(&operation); remove && remove->revision) {
    catalog::validate_revision(*remove->revision);
  }
  if (const auto* download = std::get_if<jobs::ModelDownload>(&operation)) {
    catalog::validate_revision(download->revision);
    for (const auto& fallback : download->fallbacks) catalog::parse_model_reference(fallback);
    for (const auto& glob : download->include) validate_text_field("include", glob, kMaxGlobLength);
    for (const auto& glob : download->exclude) validate_text_field("exclude", glob, kMaxGlobLength);
  }
}

void register_model_operations(jobs::JobRouter& router, catalog::ModelCatalog& catalog,
                               const jobs::JobRegistry& registry,
                               provisioner::ModelProvisioner& provisioner) {
  router.route("model_list", [&catalog](JobContext& context) { model_list(context, catalog); });
  router.route("model_get", [&catalog](JobContext& context) { model_get(context, catalog); });
  router.route("model_delete", [&catalog, &registry, &provisioner](JobContext& context) {
    model_delete(context, catalog, registry, provisioner);
  });
  router.route("model_prune", [&catalog, &registry](JobContext& context) {
    model_prune(context, catalog, registry);
  });
  router.route(
      "model_download",
      [&provisioner](JobContext& context) { model_download(context, provisioner); },
      jobs::Lane::long_running);
}

}  // namespace rbee::hive
