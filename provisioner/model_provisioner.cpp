#include "rbee/provisioner/model_provisioner.hpp"

#include <fnmatch.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <rbee/catalog/file_lock.hpp>

#include "ranged_download.hpp"
#include "rbee/provisioner/repo_snapshot.hpp"
#include "retry.hpp"
#include "staging.hpp"
#include "xet/chunk_index.hpp"

namespace fs = std::filesystem;

namespace rbee::provisioner {
namespace {

using catalog::ModelEntry;
using catalog::ModelFile;
using catalog::ModelId;
using catalog::ModelStatus;
using narration::Level;
using Clock = std::chrono::steady_clock;

constexpr const char* kActor = "provisioner";

bool matches_any(const std::vector<std::string>& globs, const std::string& path) {
  // No FNM_PATHNAME: '*' also matches '/', as DESIGN §3 and huggingface_hub's patterns do.
  return std::any_of(globs.begin(), globs.end(), [&](const std::string& glob) {
    return ::fnmatch(glob.c_str(), path.c_str(), 0) == 0;
  });
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Free bytes on the file system that holds `folder` (or its nearest existing ancestor).
std::uint64_t free_bytes(fs::path folder) {
  std::error_code ec;
  while (!folder.empty() && !fs::exists(folder, ec)) folder = folder.parent_path();
  struct statvfs stats {};
  if (::statvfs(folder.c_str(), &stats) != 0) return UINT64_MAX;  // unknown: do not block
  return static_cast<std::uint64_t>(stats.f_bavail) * stats.f_frsize;
}

FileToFetch to_fetch(const ModelFile& file) {
  return FileToFetch{file.path, file.size, file.sha256, file.etag};
}

// A regular file (not a symlink) of this size at the path.
bool on_disk_with_size(const fs::path& file, std::uint64_t size) {
  std::error_code ec;
  return fs::symlink_status(file, ec).type() == fs::file_type::regular &&
         fs::file_size(file, ec) == size && !ec;
}

ModelFile catalog_file(const Sibling& sibling) {
  return ModelFile{sibling.path, sibling.size, sibling.lfs_sha256,
                   sibling.lfs_sha256.empty() ? sibling.blob_id : "", "pending"};
}

// Already verified in an earlier run, with the same content, and still on disk.
bool already_verified(const ModelEntry* entry, const ModelFile& wanted, const fs::path& dir) {
  if (!entry) return false;
  for (const auto& file : entry->files) {
    if (file.path == wanted.path && file.state == "verified" && file.size == wanted.size &&
        file.sha256 == wanted.sha256 && file.etag == wanted.etag) {
      return on_disk_with_size(dir / file.path, file.size);
    }
  }
  return false;
}

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

// "42 s", "3 min 05 s", "2 h 10 min": an ETA a person reads at a glance.
std::string format_duration(double seconds) {
  const auto total = static_cast<std::uint64_t>(std::max(0.0, seconds) + 0.5);
  if (total < 60) return fmt::format("{} s", total);
  if (total < 3600) return fmt::format("{} min {:02} s", total / 60, total % 60);
  return fmt::format("{} h {:02} min", total / 3600, total % 3600 / 60);
}

// Download threads run at this nice value: on a machine busy hashing and writing, the hive's
// HTTP threads (nice 0) still answer /health and job submissions in milliseconds (DESIGN §8);
// with nothing else to run, downloads get every cycle as before.
constexpr int kDownloadNice = 10;

// Linux keeps the nice value per thread and a new thread inherits its creator's, so the range
// workers and hash threads a file worker starts run at it too. Best effort: a thread that may
// not change it (a seccomp sandbox, say) downloads at normal priority.
void lower_priority_of_this_thread() {
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kDownloadNice);
}

// Gated, unauthorized or forbidden: the Hub will give no file of this model to this token.
bool refuses_access(const HubError& error) {
  return error.kind() == HubErrorKind::gated || error.kind() == HubErrorKind::unauthorized ||
         error.kind() == HubErrorKind::forbidden;
}

// Some files of a job failed; /metrics counted each one by its kind already.
class FilesFailed : public ProvisionError {
 public:
  using ProvisionError::ProvisionError;
};

// Narrates progress at a steady cadence (not per chunk), with speed and ETA of the whole model.
// Thread-safe: every file worker reports its own bytes.
class ProgressReporter {
 public:
  ProgressReporter(const narration::Narrator& narrator, std::string job_id, std::string model,
                   std::uint64_t total, std::uint64_t verified, std::chrono::milliseconds interval)
      : narrator_(narrator),
        job_id_(std::move(job_id)),
        model_(std::move(model)),
        total_(total),
        interval_(interval),
        finished_(verified),
        last_report_(Clock::now()),
        last_done_(verified) {}

  std::uint64_t done() const {
    std::lock_guard lock(mutex_);
    return done_locked();
  }

  // The file's transfer begins; returns the progress to narrate with it.
  narration::Progress file_started(const ModelFile& file) {
    std::lock_guard lock(mutex_);
    in_flight_[file.path] = {file.path, 0, file.size};
    return snapshot_locked(file, 0);
  }

  narration::Progress file_failed(const ModelFile& file) {
    std::lock_guard lock(mutex_);
    in_flight_.erase(file.path);
    return snapshot_locked(file, 0);
  }

  // The file is verified or skipped: out of flight. Returns the progress to narrate.
  narration::Progress file_done(const ModelFile& file) {
    std::lock_guard lock(mutex_);
    in_flight_.erase(file.path);
    finished_ += file.size;
    return snapshot_locked(file, file.size);
  }

  // `bytes` of `file` are on disk. Returns true when it narrated (the caller may then write
  // the catalog too).
  bool update(const ModelFile& file, std::uint64_t bytes) {
    std::lock_guard lock(mutex_);
    // A file's first report is what was on disk already (a resumed part): counted as done,
    // never as speed, or a resume would start with a burst of its kept bytes per second.
    if (baselined_.insert(file.path).second) last_done_ += bytes;
    in_flight_[file.path] = {file.path, bytes, file.size};
    const auto now = Clock::now();
    if (now - last_report_ < interval_) return false;
    const std::uint64_t done = done_locked();
    const double elapsed = std::chrono::duration<double>(now - last_report_).count();
    const double instant =
        static_cast<double>(done - std::min(done, last_done_)) / std::max(elapsed, 1e-3);
    speed_ = speed_ == 0 ? instant : 0.7 * speed_ + 0.3 * instant;  // smooth, still responsive
    last_report_ = now;
    last_done_ = done;
    const narration::Progress progress = snapshot_locked(file, bytes);
    const std::string files =
        in_flight_.size() == 1
            ? fmt::format("{}: {} of {}", file.path, format_bytes(bytes), format_bytes(file.size))
            : fmt::format("{} files in flight", in_flight_.size());
    narrator_.emit(
        {kActor, "download_progress", model_,
         fmt::format("{}; total {} of {} ({:.0f}%), {}/s{}", files, format_bytes(done),
                     format_bytes(total_), total_ ? 100.0 * done / total_ : 100.0,
                     format_bytes(static_cast<std::uint64_t>(speed_)),
                     progress.eta_s ? ", " + format_duration(*progress.eta_s) + " left" : ""),
         job_id_, Level::info, 0, progress});
    return true;
  }

 private:
  narration::Progress snapshot_locked(const ModelFile& file, std::uint64_t bytes) const {
    const std::uint64_t done = done_locked();
    narration::Progress progress{file.path,    bytes, file.size, speed_,
                                 std::nullopt, done,  total_,    {}};
    for (const auto& [path, in_flight] : in_flight_) progress.in_flight.push_back(in_flight);
    if (speed_ > 0) progress.eta_s = static_cast<double>(total_ - std::min(total_, done)) / speed_;
    return progress;
  }

  std::uint64_t done_locked() const {
    std::uint64_t done = finished_;
    for (const auto& [path, file] : in_flight_) done += file.bytes_done;
    return done;
  }

  const narration::Narrator& narrator_;
  const std::string job_id_, model_;
  const std::uint64_t total_;
  const std::chrono::milliseconds interval_;
  mutable std::mutex mutex_;
  std::map<std::string, narration::FileProgress> in_flight_;
  std::set<std::string> baselined_;  // files whose first report has come
  std::uint64_t finished_ = 0;
  Clock::time_point last_report_;
  std::uint64_t last_done_ = 0;
  double speed_ = 0;
};

}  // namespace

std::string format_bytes(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::vector<Sibling> select_files(const std::vector<Sibling>& siblings,
                                  const std::optional<std::string>& single_file,
                                  const std::vector<std::string>& include,
                                  const std::vector<std::string>& exclude) {
  std::vector<Sibling> selected;
  for (const auto& sibling : siblings) {
    const bool wanted = single_file ? sibling.path == *single_file
                                    : (include.empty() || matches_any(include, sibling.path)) &&
                                          !matches_any(exclude, sibling.path);
    if (wanted) selected.push_back(sibling);
  }
  if (single_file && selected.empty()) {
    throw HubError(HubErrorKind::entry_not_found,
                   fmt::format("the repo has no file '{}'", *single_file));
  }
  return selected;
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
      chunk_index_(std::make_unique<xet::ChunkIndex>(catalog.root())) {
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
    if (entry.status != ModelStatus::downloading && entry.status != ModelStatus::deleting) continue;
    auto lock = catalog::FileLock::try_acquire(catalog_.download_lock_path(entry.id));
    if (!lock) continue;  // a live download (or delete) in another process
    if (entry.status == ModelStatus::deleting) {
      marked += catalog_.remove(entry.id) ? 1 : 0;
      continue;
    }
    catalog_.update(entry.id, [](ModelEntry& e) {
      if (e.status != ModelStatus::downloading) return;
      e.status = ModelStatus::interrupted;
      e.error = "the hive stopped during the download; a new model_download resumes it";
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
    if (restore_if_untouched(attempt, request)) throw;
    try {
      catalog_.update(id, [&](ModelEntry& e) {
        e.status = ModelStatus::cancelled;
        e.error.clear();
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
  if (!restore_if_untouched(attempt, request)) record_failure(id, request, reason);
}

bool ModelProvisioner::restore_if_untouched(const Attempt& attempt,
                                            const DownloadRequest& request) {
  if (!attempt.keeps_ready()) return false;
  const ModelId& id = attempt.before->id;
  try {
    if (catalog_.get(id) != attempt.before) catalog_.put(*attempt.before);
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
    const fs::path dir = catalog_.model_dir(id);
    for (const auto& file : entry->files) {
      if (file.state == "verified" && on_disk_with_size(dir / file.path, file.size))
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

// Downloads `files` (those not verified yet) several at a time, all sharing the job's
// connection budget. A file that fails does not stop the others; the job then fails with a
// summary of every failed file.
void ModelProvisioner::download_files(const DownloadRequest& request, ModelEntry& entry,
                                      const HubClient& hub, Attempt& attempt,
                                      const std::stop_token& stop) {
  const ModelId& id = entry.id;
  const std::string commit = entry.commit;
  std::vector<ModelFile>& files = entry.files;
  DownloadPolicy policy = settings_.download;
  if (request.connections) policy.connections = *request.connections;
  const FileDownloader downloader(hub, policy, chunk_index_.get());
  ConnectionBudget job_connections(static_cast<std::size_t>(policy.connections), &connections_);
  std::uint64_t total = 0;
  for (const auto& file : files) total += file.size;
  std::uint64_t verified = 0;
  for (const auto& file : files) verified += file.state == "verified" ? file.size : 0;
  ProgressReporter reporter(narrator_, request.job_id, id.str(), total, verified,
                            settings_.progress_interval);
  const catalog::Directory model = *catalog_.open_model_dir(id, true);
  // File events carry the files in flight, so a watcher's bars follow them.
  auto narrate = [&](std::string action, std::string human, Level level = Level::info,
                     std::optional<narration::Progress> progress = std::nullopt) {
    narrator_.emit({kActor, std::move(action), id.str(), std::move(human), request.job_id, level, 0,
                    std::move(progress)});
  };
  // The catalog is written from memory by this thread alone, about once per progress interval
  // (at once after a failure), never read back and never once per file: while this job holds
  // the model's download lock nobody else writes the entry (a delete takes that lock too). A
  // repo of 100 000 files would otherwise spend its time parsing and syncing a 20 MB document,
  // and every worker's malloc arena would keep a copy of it. A file verified but not yet
  // recorded is re-hashed on disk by the next job, never fetched again.
  std::mutex entry_mutex;  // guards `entry` (file states) and what follows
  std::condition_variable entry_changed;
  bool failure_to_record = false;
  std::size_t workers_running = 0;
  auto write_entry = [&] {
    ModelEntry snapshot;
    {
      std::lock_guard lock(entry_mutex);
      entry.bytes_done = reporter.done();
      failure_to_record = false;
      snapshot = entry;
    }
    catalog_.put(std::move(snapshot), stop);
  };
  auto set_state = [&](ModelFile& file, const std::string& state) {
    std::lock_guard lock(entry_mutex);
    file.state = state;
    if (state == "failed") {
      failure_to_record = true;
      entry_changed.notify_one();
    }
  };

  // Files stop on the job's cancel, and when the Hub refuses access to the model.
  std::stop_source files_stop;
  const std::stop_callback cancel_files(stop, [&] { files_stop.request_stop(); });

  auto download_one = [&](ModelFile& file) {
    const FileToFetch wanted = to_fetch(file);
    if (verify_on_disk(model, wanted)) {
      const auto progress = reporter.file_done(file);
      narrate("file_skipped",
              fmt::format("{} is already on disk and its {} matches", file.path,
                          file.sha256.empty() ? "git sha1" : "sha256"),
              Level::info, progress);
      set_state(file, "verified");
      return;
    }
    const std::uint64_t resumed = resumable_bytes(StagedFile(model, wanted), wanted);
    narrate("file_started",
            resumed > 0 ? fmt::format("Resuming {} at {} of {}", file.path, format_bytes(resumed),
                                      format_bytes(file.size))
                        : fmt::format("Downloading {} ({})", file.path, format_bytes(file.size)),
            Level::info, reporter.file_started(file));
    DownloadEvents events;
    std::optional<std::uint64_t> bytes_seen;  // the first report is what was on disk already
    std::uint64_t reused = 0, reused_unreported = 0;  // Xet chunks copied, not fetched
    std::uint64_t fetched = 0;
    events.reused = [&](std::uint64_t bytes) {
      reused += bytes;
      reused_unreported += bytes;
      stats_.add_reused(bytes);
    };
    events.progress = [&](std::uint64_t bytes) {
      if (bytes_seen && bytes > *bytes_seen) {
        const std::uint64_t grown = bytes - *bytes_seen;
        const std::uint64_t copied = std::min(grown, reused_unreported);
        reused_unreported -= copied;
        fetched += grown - copied;
        if (grown > copied) stats_.add_bytes(grown - copied, request.for_mirror);
      }
      bytes_seen = bytes;  // a restart from zero lowers it: count the bytes fetched again
      reporter.update(file, bytes);
    };
    events.retrying = [&](int attempt, const std::string& reason, std::chrono::milliseconds delay) {
      stats_.add_retry();
      narrate("download_retry",
              attempt == 0 ? reason
                           : fmt::format("Retrying {} in {:.1f} s (attempt {}): {}", file.path,
                                         delay.count() / 1000.0, attempt + 1, reason),
              Level::warn);
    };
    events.connections_settled = [&](int connections, const std::string& reason) {
      narrate("download_connections",
              fmt::format("{}: {} connection{} ({})", file.path, connections,
                          connections == 1 ? "" : "s", reason));
    };
    const LiveFileKey live{id.str(), commit, file.path};
    events.prefix_committed = [&](int part_fd, std::uint64_t prefix) {
      live_files_.committed(live, file.size, part_fd, prefix);
    };
    events.ranges_written = [&](int part_fd, const std::vector<ByteRange>& written) {
      live_files_.ranges_written(live, file.size, part_fd, written);
    };
    events.discarded = [&](const std::string& reason) { live_files_.abandoned(live, reason); };
    try {
      downloader.fetch(id, commit, wanted, model, files_stop.get_token(), events, &job_connections);
    } catch (const DownloadCancelled&) {
      live_files_.abandoned(live, "the download was cancelled");
      throw;
    } catch (const std::exception& error) {
      live_files_.abandoned(live, error.what());
      throw;
    }
    live_files_.verified(live);
    attempt.files_replaced = true;  // published at its path: a failure now is recorded
    const auto progress = reporter.file_done(file);
    set_state(file, "verified");
    // Chunk reuse is worth saying: how much came from disk, how much over the network.
    const std::string sources = reused == 0
                                    ? ""
                                    : fmt::format("; {} from disk, {} from the network",
                                                  format_bytes(reused), format_bytes(fetched));
    narrate("file_verified",
            fmt::format("Verified {} ({}, {}{})", file.path, format_bytes(file.size),
                        file.sha256.empty() ? "git sha1" : "sha256", sources),
            Level::info, progress);
  };

  std::mutex failures_mutex;
  std::vector<std::string> failures;
  const auto record_file_failure = [&](ModelFile& file, const std::exception& error) {
    stats_.add_error(error_kind(error));
    const std::string reason =
        narrator_.clean(explain_out_of_space(error, id, total - std::min(total, reporter.done())));
    narrate("file_failed", fmt::format("{} failed: {}", file.path, reason), Level::error,
            reporter.file_failed(file));
    set_state(file, "failed");
    std::lock_guard lock(failures_mutex);
    failures.push_back(fmt::format("{}: {}", file.path, reason));
  };
  std::exception_ptr access_refused;  // under failures_mutex: ends the model's every transfer
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    lower_priority_of_this_thread();
    for (std::size_t i = next++; i < files.size(); i = next++) {
      ModelFile& file = files[i];
      if (file.state == "verified") {  // counted as done from the start
        narrate("file_skipped", fmt::format("{} is already verified", file.path));
        continue;
      }
      if (!job_connections.acquire(files_stop.get_token())) return;  // cancelled or refused
      ConnectionLease lease(job_connections);
      try {
        download_one(file);
      } catch (const DownloadCancelled&) {
        return;
      } catch (const HubError& error) {
        if (refuses_access(error)) {
          // The Hub lists a gated repo to anyone and refuses its files: the first refusal is
          // the model's answer (no other file would fare better), so a fallback gets its turn.
          stats_.add_error(error_kind(error));
          std::lock_guard lock(failures_mutex);
          if (!access_refused) access_refused = std::current_exception();
          files_stop.request_stop();
          return;
        }
        record_file_failure(file, error);
      } catch (const std::exception& error) {
        record_file_failure(file, error);
      } catch (...) {
        // A thread body must never let anything escape (std::terminate ends every job).
        std::lock_guard lock(failures_mutex);
        failures.push_back(fmt::format("{}: failed with an unknown error", file.path));
      }
    }
  };
  const std::size_t pending = static_cast<std::size_t>(std::count_if(
      files.begin(), files.end(), [](const ModelFile& f) { return f.state != "verified"; }));
  const std::size_t worker_count = std::clamp<std::size_t>(pending, 1, settings_.parallel_files);
  {
    std::vector<std::jthread> workers;
    workers_running = worker_count;
    for (std::size_t i = 0; i < worker_count; ++i) {
      workers.emplace_back([&] {
        work();
        std::lock_guard lock(entry_mutex);
        --workers_running;
        entry_changed.notify_one();
      });
    }
    bool write_failed = false;
    std::unique_lock lock(entry_mutex);
    while (workers_running > 0) {
      entry_changed.wait_for(lock, settings_.progress_interval,
                             [&] { return failure_to_record || workers_running == 0; });
      if (workers_running == 0) break;
      lock.unlock();
      try {
        write_entry();
      } catch (const catalog::CatalogError& error) {
        // A full disk, say: the files go on (their own writes report it), the last write below
        // fails the job if it still cannot be made. Said once, not every second.
        if (!write_failed) {
          narrate("catalog_write_failed",
                  fmt::format("Could not record progress in the catalog: {}", error.what()),
                  Level::warn);
        }
        write_failed = true;
      }
      lock.lock();
    }
  }
  try {
    write_entry();
    live_files_.forget_verified(id.str());  // readers find them in the catalog now
  } catch (const catalog::CatalogError& error) {
    // When files failed (a full disk, say), their reasons are the job's error, not this echo.
    if (failures.empty() && !stop.stop_requested()) throw;
    narrate("catalog_write_failed",
            fmt::format("Could not record the files' states in the catalog: {}", error.what()),
            Level::warn);
  }
  if (access_refused) std::rethrow_exception(access_refused);
  if (stop.stop_requested()) throw DownloadCancelled();
  if (failures.size() == 1) throw FilesFailed(failures.front());
  if (!failures.empty()) {
    constexpr std::size_t kListed = 5;  // a repo of 200 failing shards needs no 200-line error
    std::string summary = fmt::format("{} of {} files failed", failures.size(), files.size());
    for (std::size_t i = 0; i < std::min(kListed, failures.size()); ++i)
      summary += "; " + failures[i];
    if (failures.size() > kListed)
      summary += fmt::format("; and {} more", failures.size() - kListed);
    throw FilesFailed(summary);
  }
}

// The Hub lists a gated repo to anyone and refuses its files (401/403 GatedRepo): one resolve
// of the first file to fetch says whether this token may have them, before any transfer
// starts, so a refused model fails at once with the Hub's answer and no other file is tried
// (a fallback model then gets its turn). Any other failure of that look is left to the
// transfer, which retries what can be retried.
void ModelProvisioner::check_gated_access(const HubClient& hub, const RepoInfo& info,
                                          const ModelId& id, const std::vector<ModelFile>& files,
                                          const std::stop_token& stop) const {
  if (!info.gated) return;
  const auto first = std::find_if(files.begin(), files.end(),
                                  [](const ModelFile& f) { return f.state != "verified"; });
  if (first == files.end()) return;
  try {
    hub.resolve(id, info.commit, first->path, nullptr, stop);
  } catch (const HubError& error) {
    if (refuses_access(error)) throw;
  }
}

void ModelProvisioner::record_failure(const ModelId& id, const DownloadRequest& request,
                                      const std::string& reason) {
  try {
    catalog_.update(id, [&](ModelEntry& e) {
      if (e.endpoint.empty()) e.endpoint = hub().settings().endpoint;  // a fresh entry
      if (e.revision.empty()) e.revision = request.revision;
      e.status = ModelStatus::failed;
      e.error = narrator_.clean(reason);  // outside text (a Hub message) may be in it
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

void ModelProvisioner::download_listed(const DownloadRequest& request, const ModelId& id,
                                       const RepoInfo& info, const HubClient& hub, Attempt& attempt,
                                       const std::stop_token& stop) {
  const auto reference = catalog::parse_model_reference(request.model);
  const auto started = Clock::now();
  auto narrate = [&](std::string action, std::string human, Level level = Level::info) {
    narrator_.emit({kActor, std::move(action), id.str(), std::move(human), request.job_id, level, 0,
                    std::nullopt});
  };

  const auto selected =
      select_files(info.siblings, reference.file, request.include, request.exclude);
  if (selected.empty()) {
    throw ProvisionError(
        fmt::format("no file of {} matches the include/exclude patterns", id.str()));
  }
  for (const auto& sibling : selected) {
    try {
      catalog::validate_repo_path(sibling.path);
    } catch (const catalog::CatalogError& error) {
      throw ProvisionError(fmt::format(
          "refusing {}: the Hub lists a file it cannot safely write: {}", id.str(), error.what()));
    }
    if (sibling.lfs_sha256.empty() && sibling.blob_id.empty()) {
      throw ProvisionError(fmt::format(
          "the Hub gave no checksum for {}: refusing an unverifiable file", sibling.path));
    }
  }

  const auto& previous = attempt.before;
  refuse_revision_conflict(request, id, info, previous);
  const fs::path dir = catalog_.model_dir(id);
  const catalog::Directory model = *catalog_.open_model_dir(id, true);  // refuses a symlink
  try {
    attempt.snapshot_before =
        record_repo_snapshot(model, info, request.revision, hub.settings().listing);
  } catch (const std::exception& error) {
    // Only the mirror reads it: it then lists the repo again when asked.
    narrate(
        "snapshot_write_failed",
        fmt::format("Could not keep the listing of {} for the mirror: {}", id.str(), error.what()),
        Level::warn);
  }
  const ModelEntry* before = previous && previous->status != ModelStatus::failed &&
                                     previous->status != ModelStatus::deleting
                                 ? &*previous
                                 : nullptr;
  std::set<std::string_view> repo_paths;
  for (const auto& sibling : info.siblings) repo_paths.insert(sibling.path);
  std::vector<ModelFile> files;
  std::uint64_t total = 0, verified_bytes = 0, remaining = 0;
  // Files of this commit that an earlier job verified stay in the entry (one file, then
  // another, of the same repo: the catalog lists both).
  if (before && before->commit == info.commit) {
    std::set<std::string_view> selected_paths;
    for (const auto& sibling : selected) selected_paths.insert(sibling.path);
    for (const auto& kept : before->files) {
      if (kept.state == "verified" && !selected_paths.contains(kept.path) &&
          on_disk_with_size(dir / kept.path, kept.size)) {
        files.push_back(kept);
        total += kept.size;
        verified_bytes += kept.size;
      }
    }
  }
  for (const auto& sibling : selected) {
    ModelFile file = catalog_file(sibling);
    if (already_verified(before, file, dir)) {
      file.state = "verified";
      verified_bytes += file.size;
    } else {
      const FileToFetch wanted = to_fetch(file);
      const StagedFile staged(model, wanted);
      if (!repo_paths.contains(file.path + ".part")) staged.adopt_legacy_part();
      remaining += file.size - std::min(file.size, staged.part_size());
    }
    total += file.size;
    files.push_back(file);
  }

  if (before && before->status == ModelStatus::ready && before->commit == info.commit &&
      remaining == 0 && verified_bytes == total) {
    narrate("download_up_to_date",
            fmt::format("{} is already up to date: {} file{}, {}, nothing downloaded (commit {})",
                        id.str(), files.size(), files.size() == 1 ? "" : "s", format_bytes(total),
                        info.commit.substr(0, 12)));
    return;
  }

  const std::uint64_t available = free_bytes(dir);
  if (available < remaining + settings_.disk_reserve_bytes) {
    throw NotEnoughDisk(
        fmt::format("not enough disk space for {}: {} still to download plus {} kept free, but "
                    "only {} available",
                    id.str(), format_bytes(remaining), format_bytes(settings_.disk_reserve_bytes),
                    format_bytes(available)));
  }

  check_gated_access(hub, info, id, files, stop);
  ModelEntry entry = catalog_.update(id, [&](ModelEntry& e) {
    e.endpoint = hub.settings().endpoint;
    // The revision the hive's model follows is the operator's: a peer's pull of the same commit
    // by another name (a tag, the commit id) does not change it.
    if (!request.for_mirror || e.revision.empty()) e.revision = request.revision;
    e.commit = info.commit;
    e.status = ModelStatus::downloading;
    e.bytes_total = total;
    e.bytes_done = verified_bytes;
    e.error.clear();
    e.files = files;
    e.last_job_id = request.job_id;
  });
  narrator_.emit({kActor, "download_started", id.str(),
                  fmt::format("Downloading {}@{} (commit {}): {} file{}, {}", id.str(),
                              request.revision, info.commit.substr(0, 12), files.size(),
                              files.size() == 1 ? "" : "s", format_bytes(total)),
                  request.job_id, Level::info, 0,
                  narration::Progress{"", 0, 0, 0, std::nullopt, verified_bytes, total, {}}});

  download_files(request, entry, hub, attempt, stop);
  entry.status = ModelStatus::ready;
  entry.bytes_done = total;
  entry.error.clear();
  catalog_.put(entry);
  const double elapsed = seconds_since(started);
  const double average = static_cast<double>(total - verified_bytes) / std::max(elapsed, 1e-3);
  // The final progress is the whole model at the average speed, so a client's Total line
  // agrees with this sentence.
  narrator_.emit({kActor, "download_completed", id.str(),
                  fmt::format("Downloaded {}: {} file{}, {} in {:.1f} s ({}/s)", id.str(),
                              files.size(), files.size() == 1 ? "" : "s", format_bytes(total),
                              elapsed, format_bytes(static_cast<std::uint64_t>(average))),
                  request.job_id, Level::info, 0,
                  narration::Progress{"", 0, 0, average, std::nullopt, total, total, {}}});
}

}  // namespace rbee::provisioner
