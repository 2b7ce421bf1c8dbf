#include "rbee/provisioner/model_provisioner.hpp"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>
#include <rbee/catalog/file_lock.hpp>
#include <rbee/catalog/revisions.hpp>
#include <rbee/narration/human_units.hpp>

#include "model_story.hpp"
#include "rbee/provisioner/repo_snapshot.hpp"
#include "rbee/provisioner/retry.hpp"

namespace rbee::provisioner {
namespace {

// The errno of a disk error (a part, a sidecar or the catalog), or 0.
int disk_error_number(const std::exception& error) {
  if (const auto* download = dynamic_cast<const DownloadError*>(&error)) {
    return download->error_number();
  }
  if (const auto* file_system = dynamic_cast<const catalog::FileSystemError*>(&error)) {
    return file_system->error_number();
  }
  return 0;
}

// A full disk, a full quota, or a file size limit: space must be freed before a retry helps.
bool is_out_of_space(int error_number) {
  return error_number == ENOSPC || error_number == EDQUOT || error_number == EFBIG;
}

}  // namespace

FileToFetch to_fetch(const ModelFile& file) {
  return FileToFetch{file.path, file.size, file.sha256, file.etag};
}

bool on_disk_with_size(const fs::path& file, std::uint64_t size) {
  std::error_code ec;
  return fs::symlink_status(file, ec).type() == fs::file_type::regular &&
         fs::file_size(file, ec) == size && !ec;
}

std::uint64_t free_bytes(fs::path folder) {
  std::error_code ec;
  while (!folder.empty() && !fs::exists(folder, ec)) folder = folder.parent_path();
  struct statvfs stats {};
  if (::statvfs(folder.c_str(), &stats) != 0) return UINT64_MAX;  // unknown: do not block
  return static_cast<std::uint64_t>(stats.f_bavail) * stats.f_frsize;
}

bool refuses_access(const HubError& error) {
  return error.kind() == HubErrorKind::gated || error.kind() == HubErrorKind::unauthorized ||
         error.kind() == HubErrorKind::forbidden;
}

// One of max_concurrent_downloads places; waiting for one is narrated and cancellable. A pull
// the mirror makes for a peer takes none: a peer is waiting on it, its concurrency is bounded
// by the job router's pull-through pool, and its connections by the hive's budget.
class ModelProvisioner::DownloadSlot {
 public:
  DownloadSlot(ModelProvisioner& owner, const DownloadRequest& request, const std::stop_token& stop)
      : owner_(owner), counted_(!request.for_mirror) {
    if (!counted_) return;
    std::unique_lock lock(owner_.slots_mutex_);
    if (owner_.running_downloads_ >= owner_.settings_.max_concurrent_downloads) {
      owner_.narrator_.emit(
          {kActor, "download_queued", request.model,
           fmt::format("Queued: {} downloads are running (the limit)", owner_.running_downloads_),
           request.job_id, Level::info, 0, std::nullopt});
    }
    if (!owner_.slot_freed_.wait(lock, stop, [&] {
          return owner_.running_downloads_ < owner_.settings_.max_concurrent_downloads;
        })) {
      throw DownloadCancelled();
    }
    ++owner_.running_downloads_;
  }
  ~DownloadSlot() {
    if (!counted_) return;
    {
      std::lock_guard lock(owner_.slots_mutex_);
      --owner_.running_downloads_;
    }
    owner_.slot_freed_.notify_one();
  }

 private:
  ModelProvisioner& owner_;
  const bool counted_;
};

ModelProvisioner::ModelProvisioner(HubClient hub, catalog::ModelCatalog& catalog,
                                   const narration::Narrator& narrator,
                                   ProvisionerSettings settings, std::vector<HubClient> fallbacks)
    : hubs_{std::move(hub)},
      connections_(settings.max_download_connections),
      catalog_(catalog),
      narrator_(narrator),
      settings_(settings),
      chunk_index_(open_chunk_index(catalog.root())) {
  for (auto& fallback : fallbacks) hubs_.push_back(std::move(fallback));
}

ModelProvisioner::~ModelProvisioner() = default;

std::size_t ModelProvisioner::active_downloads() const {
  std::lock_guard lock(slots_mutex_);
  return running_downloads_;
}

std::size_t ModelProvisioner::mark_interrupted_downloads() {
  std::size_t marked = 0;
  for (const auto& entry : catalog_.list()) {
    const bool revision_deleting = std::ranges::any_of(entry.revisions, [](const auto& revision) {
      return revision.status == ModelStatus::deleting;
    });
    if (entry.status != ModelStatus::downloading && entry.status != ModelStatus::deleting &&
        !revision_deleting) {
      continue;
    }
    auto lock = catalog::FileLock::try_acquire(catalog_.download_lock_path(entry.id));
    if (!lock) continue;  // a live download (or delete) in another process
    if (entry.status == ModelStatus::deleting) {
      marked += catalog_.remove(entry.id) ? 1 : 0;
      continue;
    }
    // A revision a killed hive was removing: its files go now, as model_delete would have.
    for (const auto& revision : entry.revisions) {
      if (revision.status != ModelStatus::deleting) continue;
      catalog::remove_revision(catalog_, entry.id, revision.commit);
      ++marked;
    }
    if (entry.status != ModelStatus::downloading) continue;
    catalog_.update(entry.id, [](ModelEntry& e) {
      if (e.status != ModelStatus::downloading) return;
      e.end_download(ModelStatus::interrupted,
                     "the hive stopped during the download; a new model_download resumes it");
    });
    ++marked;
  }
  return marked;
}

void ModelProvisioner::download(const DownloadRequest& request, std::stop_token stop) {
  const auto reference = catalog::parse_model_reference(request.model);
  const ModelId& id = reference.id;
  // The model's lock before a download slot: a job that waits for another job of the same
  // model (a peer reading its files in parallel through the mirror) must not hold a slot that
  // a download of another model could use meanwhile.
  const auto lock = acquire_model_lock(request, id, stop);
  DownloadSlot slot(*this, request, stop);
  if (settings_.offline) return serve_from_cache(request, id);
  Attempt attempt;
  attempt.before = catalog_.get(id);
  RepoInfo info;
  const HubClient* hub = nullptr;
  try {
    std::tie(info, hub) = list_repo(request, id, stop);
  } catch (const HubError& error) {
    stats_.add_error(error_kind(error));
    // A typo'd repo id leaves no folder behind; a ready model stays ready (nothing changed);
    // another model we already know records why it failed.
    if (attempt.before && !attempt.keeps_ready()) record_failure(id, request, error.what());
    throw;
  }
  try {
    download_listed(request, id, info, *hub, attempt, stop);
  } catch (const RevisionConflict& error) {
    stats_.add_error(error_kind(error));
    throw;  // nothing was touched: the model stays as it is
  } catch (const DownloadCancelled&) {
    if (restore_if_untouched(attempt, request, ModelStatus::cancelled, "")) throw;
    try {
      catalog_.update(id, [&](ModelEntry& e) {
        e.end_download(ModelStatus::cancelled, "");
        e.last_job_id = request.job_id;
      });
    } catch (const catalog::CatalogError& error) {
      // The cancel stands; the entry says downloading until the next start marks it interrupted.
      narrator_.emit({kActor, "catalog_write_failed", id.str(),
                      fmt::format("Could not record the cancel in the catalog: {}", error.what()),
                      request.job_id, Level::warn, 0, std::nullopt});
    }
    throw;
  } catch (const FilesFailed& error) {
    record_failed_attempt(attempt, id, request, error.what());  // each file counted already
    throw;
  } catch (const std::exception& error) {
    stats_.add_error(error_kind(error));
    const auto entry = catalog_.get(id);
    const std::uint64_t needed =
        entry ? entry->bytes_total - std::min(entry->bytes_total, entry->bytes_done) : 0;
    const std::string reason = explain_out_of_space(error, id, needed);
    record_failed_attempt(attempt, id, request, reason);  // the job says the same
    if (reason != error.what()) throw NotEnoughDisk(reason);
    throw;
  }
}

void ModelProvisioner::record_failed_attempt(const Attempt& attempt, const ModelId& id,
                                             const DownloadRequest& request,
                                             const std::string& reason) {
  if (!restore_if_untouched(attempt, request, ModelStatus::failed, reason)) {
    record_failure(id, request, reason);
  }
}

bool ModelProvisioner::restore_if_untouched(const Attempt& attempt, const DownloadRequest& request,
                                            ModelStatus status, const std::string& reason) {
  if (!attempt.keeps_ready()) return false;
  const ModelId& id = attempt.before->id;
  try {
    ModelEntry restored = *attempt.before;
    // The failure is the attempted commit's alone; the ready one keeps its status.
    const auto* known = restored.find_revision(attempt.commit);
    if (!attempt.commit.empty() && (!known || known->status != ModelStatus::ready)) {
      auto& tried = restored.revision_record(attempt.commit);
      tried.status = status;
      tried.error = narrator_.clean(reason);
    }
    if (catalog_.get(id) != restored) catalog_.put(std::move(restored));
    if (attempt.snapshot_before) {
      if (const auto model = catalog_.open_model_dir(id, false)) {
        write_repo_snapshot(*model, *attempt.snapshot_before);
      }
    }
  } catch (const catalog::CatalogError& error) {
    narrator_.emit(
        {kActor, "catalog_write_failed", id.str(),
         fmt::format("Could not put back the entry of {} as it was: {}", id.str(), error.what()),
         request.job_id, Level::warn, 0, std::nullopt});
  }
  return true;
}

std::string ModelProvisioner::explain_out_of_space(const std::exception& error, const ModelId& id,
                                                   std::uint64_t still_needed) const {
  const int error_number = disk_error_number(error);
  if (!is_out_of_space(error_number)) return error.what();
  const fs::path dir = catalog_.model_dir(id);
  return fmt::format(
      "{}; disk full: {} has {} free, {} still to download plus {} kept free; free some space "
      "and run model_download again, it resumes where it stopped",
      error.what(), dir.string(), format_bytes(free_bytes(dir)), format_bytes(still_needed),
      format_bytes(settings_.disk_reserve_bytes));
}

// One download per model at a time, across threads and processes. A later job follows the
// running one's progress from the catalog until the lock is free, then checks what is left
// (usually nothing: "already up to date").
std::unique_ptr<catalog::FileLock> ModelProvisioner::acquire_model_lock(
    const DownloadRequest& request, const ModelId& id, const std::stop_token& stop) {
  const auto path = catalog_.download_lock_path(id);
  auto lock = catalog::FileLock::try_acquire(path);
  if (lock) return lock;
  narrator_.emit({kActor, "download_waiting", id.str(),
                  fmt::format("Another job is downloading {}; following its progress", id.str()),
                  request.job_id, Level::info, 0, std::nullopt});
  std::uint64_t last_reported = UINT64_MAX;
  while (!(lock = catalog::FileLock::try_acquire(path))) {
    if (auto entry = catalog_.get(id); entry && entry->bytes_done != last_reported) {
      last_reported = entry->bytes_done;
      narration::Progress progress{"", 0, 0, 0, std::nullopt, entry->bytes_done, entry->bytes_total,
                                   {}};
      narrator_.emit(
          {kActor, "download_progress", id.str(),
           fmt::format("{} of {} (another job's download)", format_bytes(entry->bytes_done),
                       format_bytes(entry->bytes_total)),
           request.job_id, Level::info, 0, progress});
    }
    if (!sleep_unless_stopped(settings_.progress_interval, stop)) throw DownloadCancelled();
  }
  return lock;
}

// The listing, retried like a file transfer when the Hub is busy or the network flaky. A Hub
// that cannot be reached or answers 5xx hands over to the next of hubs_ at once (a peer mirror
// that is down falls back to the Hub itself); after the last, the round is retried with backoff.
std::pair<RepoInfo, const HubClient*> ModelProvisioner::list_repo(const DownloadRequest& request,
                                                                  const ModelId& id,
                                                                  const std::stop_token& stop) {
  for (int failures = 1;; ++failures) {
    for (std::size_t i = 0; i < hubs_.size(); ++i) {
      try {
        return {hubs_[i].model_info(id, request.revision, stop), &hubs_[i]};
      } catch (const HubError& error) {
        if (stop.stop_requested()) throw DownloadCancelled();
        const bool unreachable =
            error.kind() == HubErrorKind::network || error.kind() == HubErrorKind::server_error;
        if (unreachable && i + 1 < hubs_.size()) {
          narrator_.emit(
              {kActor, "download_endpoint_fallback", id.str(),
               fmt::format("{} cannot list {} ({}); trying {}", hubs_[i].settings().endpoint,
                           id.str(), error.what(), hubs_[i + 1].settings().endpoint),
               request.job_id, Level::warn, 0, std::nullopt});
          continue;
        }
        if (!error.retryable() || failures >= settings_.download.max_attempts) throw;
        const auto delay = backoff_delay(settings_.download, failures, error.retry_after());
        stats_.add_retry();
        narrator_.emit({kActor, "download_retry", id.str(),
                        fmt::format("Listing {} again in {:.1f} s (attempt {}): {}", id.str(),
                                    delay.count() / 1000.0, failures + 1, error.what()),
                        request.job_id, Level::warn, 0, std::nullopt});
        if (!sleep_unless_stopped(delay, stop)) throw DownloadCancelled();
        break;
      }
    }
  }
}

void ModelProvisioner::serve_from_cache(const DownloadRequest& request, const ModelId& id) {
  const auto reference = catalog::parse_model_reference(request.model);
  const std::string wanted = fmt::format("{}@{}", request.model, request.revision);
  const auto entry = catalog_.get(id);
  bool revision_matches =
      entry && (entry->revision == request.revision || entry->commit == request.revision);
  if (entry && !revision_matches) {
    if (const auto model = catalog_.open_model_dir(id, false)) {
      const auto snapshot = load_repo_snapshot(*model, hub().settings().listing);
      revision_matches =
          snapshot && snapshot->listing.commit == entry->commit &&
          std::ranges::find(snapshot->revisions, request.revision) != snapshot->revisions.end();
    }
  }
  std::vector<Sibling> held;
  if (revision_matches) {
    for (const auto& file : entry->files) {
      if (file.state == "verified" && on_disk_with_size(file.blob, file.size))
        held.push_back({file.path, file.size, file.etag, file.sha256});
    }
  }
  std::vector<Sibling> selected;
  try {
    selected = select_files(held, reference.file, request.include, request.exclude);
  } catch (const HubError&) {
  }
  const bool whole_model = !reference.file && request.include.empty() && request.exclude.empty();
  const bool complete =
      !selected.empty() && (!whole_model || (entry->status == ModelStatus::ready &&
                                             selected.size() == entry->files.size()));
  if (!complete) {
    throw NotInCache(fmt::format(
        "the hive is offline (--offline) and its cache does not hold {}{}; it never contacts "
        "a Hub in this mode",
        wanted,
        entry ? fmt::format(" (it has {} at commit {}, {})", id.str(), entry->commit.substr(0, 12),
                            catalog::to_string(entry->status))
              : ""));
  }
  narrator_.emit(
      {kActor, "download_up_to_date", id.str(),
       fmt::format("Offline: {} is in the cache ({} file{}, commit {})", wanted, selected.size(),
                   selected.size() == 1 ? "" : "s", entry->commit.substr(0, 12)),
       request.job_id, Level::info, 0, std::nullopt});
}

void ModelProvisioner::record_failure(const ModelId& id, const DownloadRequest& request,
                                      const std::string& reason) {
  try {
    catalog_.update(id, [&](ModelEntry& e) {
      if (e.endpoint.empty()) e.endpoint = hub().settings().endpoint;  // a fresh entry
      if (e.revision.empty()) e.revision = request.revision;
      e.end_download(ModelStatus::failed,
                     narrator_.clean(reason));  // outside text (a Hub message) may be in it
      e.last_job_id = request.job_id;
    });
  } catch (const catalog::CatalogError& error) {
    // A full disk may refuse this write too. The job still fails with the first reason; the
    // previous document stays readable, and the next start marks the entry interrupted.
    narrator_.emit({kActor, "catalog_write_failed", id.str(),
                    fmt::format("Could not record the failure in the catalog: {}", error.what()),
                    request.job_id, Level::warn, 0, std::nullopt});
  }
}

// The mirror pulls what peers ask for into this hive's model folder, which holds one commit.
// A peer asking for another commit (an old one by id, a tag elsewhere) must not move the model
// the hive's workers load, nor flip it back at the next request for the branch: such a pull is
// refused before anything is written (DESIGN §16 gives each revision its own snapshot). The
// branch the model follows may move on (the same revision name: an update, as a pull would).
void ModelProvisioner::refuse_revision_conflict(const DownloadRequest& request, const ModelId& id,
                                                const RepoInfo& info,
                                                const std::optional<ModelEntry>& current) const {
  if (!request.for_mirror || !current || current->commit.empty() ||
      current->status == ModelStatus::deleting || current->commit == info.commit ||
      current->revision == request.revision) {
    return;
  }
  throw RevisionConflict(fmt::format(
      "{}@{} is commit {}, but this hive holds {} at {} (commit {}) and serves no other "
      "revision of it; ask the Hub for that one",
      id.str(), narrator_.clean(request.revision), info.commit.substr(0, 12), id.str(),
      narrator_.clean(current->revision), current->commit.substr(0, 12)));
}

}  // namespace rbee::provisioner
