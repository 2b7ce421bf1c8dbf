// The files of one model, several at once, through the transfer floor (FileDownloader): each
// file's narration and live-file events, the model's progress, the catalog written at a steady
// cadence from memory, and the failures gathered into one reason.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <rbee/narration/human_units.hpp>

#include "model_story.hpp"

namespace rbee::provisioner {
namespace {

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

// For operators and the bench (DESIGN §8, durable at the speed of non-durable): how long the
// hash and the fsync took after the last byte.
std::string describe_timeline(const ModelFile& file, const FileTimeline& timeline) {
  const auto seconds = [](std::chrono::milliseconds at) { return at.count() / 1000.0; };
  return fmt::format(
      "{}: last byte at {:.2f} s, hashed at {:.2f} s, durable at {:.2f} s; writeback of {} began "
      "while it downloaded",
      file.path, seconds(timeline.received), seconds(timeline.hashed), seconds(timeline.durable),
      format_bytes(timeline.written_back));
}

}  // namespace

// Downloads `files` (those not verified yet) several at a time, all sharing the job's
// connection budget. A file that fails does not stop the others; the job then fails with a
// summary of every failed file.
void ModelProvisioner::download_files(const DownloadRequest& request, ModelEntry& entry,
                                      const HubClient& hub, const std::stop_token& stop) {
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
    const std::uint64_t resumed = resumable_bytes(model, wanted);
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
    std::optional<FileTimeline> timeline;
    events.finished = [&](const FileTimeline& finished) {
      timeline = finished;
      stats_.add_written_back(finished.written_back);
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
    if (timeline) narrate("file_timeline", describe_timeline(file, *timeline), Level::debug);
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

}  // namespace rbee::provisioner
