#include "ranged_download.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <rbee/narration/sanitize.hpp>

#include "adaptive_connections.hpp"
#include "file_hash.hpp"
#include "http_connection.hpp"
#include "part_file.hpp"
#include "rbee/provisioner/content_range.hpp"
#include "rbee/provisioner/retry.hpp"

#include "ranged_file_download.hpp"

namespace fs = std::filesystem;

namespace rbee::provisioner {
namespace ranged {
namespace {

using namespace std::chrono_literals;

constexpr int kStartConnections = 4;  // the adaptive controller's first step
constexpr auto kTick = 100ms;         // hashing and progress cadence
constexpr auto kPersistEvery = 1s;    // fdatasync + sidecar cadence

}  // namespace

RangedOutcome RangedDownload::run(std::string& mismatch_reason) {
  TimelineClock timeline;
  prepare_part();
  run_workers();
  timeline.received();
  const std::uint64_t written_back = written_back_.load();
  if (failure_) std::rethrow_exception(failure_);
  if (stop_.stop_requested()) throw DownloadCancelled();
  if (ranges_refused_) {
    discard_part();
    return RangedOutcome::ranges_refused;
  }
  hash_prefix();
  if (hashed_ != file_.size) {
    throw HubError(HubErrorKind::protocol, fmt::format("{}: ranges ended at {} of {} bytes",
                                                       file_.path, hashed_, file_.size));
  }
  const std::string actual = hash_.hex_digest();
  timeline.hashed();
  if (actual != hash_.expected()) {
    mismatch_reason = fmt::format("{} mismatch for {}: expected {}, got {}", hash_.algorithm(),
                                  file_.path, hash_.expected(), actual);
    discard_part();
    return RangedOutcome::hash_mismatch;
  }
  commit_part();
  timeline.durable(events_, written_back);
  return RangedOutcome::verified;
}

// Opens (or creates) the part, learns what is already on disk, and preallocates the rest.
void RangedDownload::prepare_part() {
  auto part = open_resumable_part(staged_, file_);
  fd_ = std::move(part.fd);
  persisted_ = part.done;
  preallocate();
  plan_segments(part.done);
}

void RangedDownload::preallocate() {
  const int error = ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(file_.size));
  if (error == 0) return;
  if (error == EOPNOTSUPP || error == EINVAL) {  // e.g. some network file systems
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_.size)) == 0) return;
    throw_disk_error("extend", part_path_, errno);
  }
  throw_disk_error("allocate space for", part_path_, error);
}

// The gaps between the done ranges, each unclaimed until connections cut requests from it.
void RangedDownload::plan_segments(const std::vector<Range>& done) {
  std::uint64_t cursor = 0, remaining = 0;
  const auto add_gap = [&](std::uint64_t begin, std::uint64_t end) {
    segments_.push_back({begin, end, begin, false});
    remaining += end - begin;
  };
  for (const auto& range : done) {
    if (range.begin > cursor) add_gap(cursor, range.begin);
    segments_.push_back({range.begin, range.end, range.end, false});
    cursor = range.end;
  }
  if (cursor < file_.size) add_gap(cursor, file_.size);
  const auto connections = static_cast<std::uint64_t>(std::max(1, policy_.connections));
  const int useful = static_cast<int>(
      std::clamp<std::uint64_t>((remaining + policy_.min_range_bytes - 1) /
                                    std::max<std::uint64_t>(policy_.min_range_bytes, 1),
                                1, connections));
  controller_.emplace(useful, policy_.adaptive_connections ? kStartConnections : useful);
  share_between_ = controller_->ceiling();
}

void RangedDownload::run_workers() {
  std::stop_callback relay_stop(stop_, [this] { stop_workers(); });
  report_progress();                // what is already on disk, before any byte of this run arrives
  start_worker(ConnectionLease());  // on the connection the caller holds for this file
  add_workers();
  try {
    coordinate();
  } catch (...) {  // a disk error of the coordinator: stop the connections before joining them
    stop_workers();
    workers_.clear();
    throw;
  }
  workers_.clear();  // joins
  if (!ranges_refused_ && !failure_ && !stop_.stop_requested()) {
    report_connections("the download ended before more were tried");
  }
  report_progress();
  if (!ranges_refused_) persist();  // what a resume can start from
}

// Until every connection is done: hash the growing prefix, report progress, persist, and
// steer the connection count (adaptive_connections.hpp).
void RangedDownload::coordinate() {
  auto last_persist = Clock::now();
  for (;;) {
    bool all_done = false;
    {
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, kTick, [this] { return workers_done_ == workers_started_; });
      all_done = workers_done_ == workers_started_;
    }
    if (all_done) {
      // The last connection was retired (too slow) with its segment unfinished: a fresh one
      // takes over on the connection the caller holds for this file.
      if (!has_unclaimed_work()) return;
      start_worker(ConnectionLease());
    }
    steer_connections();
    hash_prefix();
    report_progress();
    if (Clock::now() - last_persist >= kPersistEvery) {
      persist();
      last_persist = Clock::now();
    }
  }
}

void RangedDownload::start_worker(ConnectionLease lease) {
  {
    std::lock_guard lock(mutex_);
    ++workers_started_;
  }
  auto& worker = *workers_.emplace_back(std::make_unique<Worker>());
  worker.thread = std::jthread([this, &worker, lease = std::move(lease)] { work(worker); });
}

int RangedDownload::open_workers() {
  std::lock_guard lock(mutex_);
  return workers_started_ - workers_done_;
}

// Up to the controller's target, each extra connection paid from the budget. True when the
// target is reached, or cannot be (no budget, or no work worth another connection).
bool RangedDownload::add_workers() {
  while (open_workers() < controller_->target()) {
    if (!has_unclaimed_work()) return false;
    if (!extra_connections_) {
      start_worker(ConnectionLease());
    } else if (extra_connections_->try_acquire()) {
      start_worker(ConnectionLease(*extra_connections_));
    } else {
      return false;
    }
  }
  return true;
}

// One tick of the controller: refusals first, then the speed sample, then the count.
void RangedDownload::steer_connections() {
  int refused_with = 0;
  {
    std::lock_guard lock(mutex_);
    refused_with = std::exchange(refused_with_others_, 0);
    peak_served_ = being_served_;
  }
  if (refused_with > 0) controller_->refused(refused_with);
  const bool reached = add_workers();
  std::uint64_t received = 0;
  for (const auto& worker : workers_) received += worker->received.load();
  const int open = open_workers();
  if (!has_unclaimed_work()) {
    // The last requests are out: connections fall idle one by one, and a window now would
    // judge the end of the file, not the count. No step is judged any more.
    controller_->sample(Clock::now(), received, 0);
  } else {
    // A count the budget cannot reach is judged as it is.
    controller_->sample(Clock::now(), received, reached ? open : controller_->target());
  }
  share_between_ = controller_->ceiling();
  retire_surplus();
  replace_slow_connection();
  if (controller_->settled()) report_connections(controller_->reason());
}

void RangedDownload::report_connections(const std::string& reason) {
  if (std::exchange(settled_reported_, true)) return;
  std::lock_guard lock(events_mutex_);
  if (events_.connections_settled) events_.connections_settled(controller_->target(), reason);
}

std::vector<Worker*> RangedDownload::running_workers() {
  std::vector<Worker*> running;
  std::lock_guard lock(mutex_);
  for (const auto& worker : workers_) {
    if (!worker->finished && !worker->retire && !worker->leave) running.push_back(worker.get());
  }
  return running;
}

// The worker leaves at once (its transfer is woken and ends), releasing its segment.
void RangedDownload::retire(Worker& worker) {
  worker.retire = true;
  worker.stop.request_stop();
}

// Above the target (the controller went back a step): the newest connections leave at the
// end of their request in flight, so the bytes the server already sent are not wasted.
void RangedDownload::retire_surplus() {
  auto running = running_workers();
  for (int surplus = static_cast<int>(running.size()) - controller_->target(); surplus > 0;
       --surplus) {
    running.back()->leave = true;
    running.pop_back();
  }
}

// A connection far slower than the median (a bad route, a slow CDN node) leaves; the next
// tick opens a fresh one in its place, which takes over its segment. This is the tail that
// makes other downloaders stick at 99%.
void RangedDownload::replace_slow_connection() {
  const auto now = Clock::now();
  if (now - last_speed_check_ < AdaptiveConnections::kWindow) return;
  const double seconds = std::chrono::duration<double>(now - last_speed_check_).count();
  last_speed_check_ = now;
  std::vector<std::pair<double, Worker*>> rates;
  for (Worker* worker : running_workers()) {
    const std::uint64_t received = worker->received.load();
    const double rate = static_cast<double>(received - worker->window_received) / seconds;
    const bool old_enough = now - worker->started >= 2 * AdaptiveConnections::kWindow;
    if (worker->window_received > 0 && old_enough) rates.emplace_back(rate, worker);
    worker->window_received = std::max<std::uint64_t>(received, 1);
  }
  if (rates.empty()) return;
  std::sort(rates.begin(), rates.end());
  // The typical connection's speed, from a window where at least 3 were measured: kept for
  // the tail of the file, where the slow connection may be the last one left.
  if (rates.size() >= 3) typical_rate_ = rates[rates.size() / 2].first;
  const double median = typical_rate_;
  constexpr double kMinMedian = 1 << 20;  // below 1 MiB/s every figure is noise
  if (median < kMinMedian || rates.front().first >= median / kSlowFactor) return;
  if (replacements_ >= controller_->target()) return;  // the server is uneven, not one route
  ++replacements_;
  retire(*rates.front().second);
  notify_retry(0,
               fmt::format("{}: a connection ran at {:.1f} MB/s against a median of {:.1f} MB/s; "
                           "replacing it",
                           file_.path, rates.front().first / 1e6, median / 1e6),
               {});
}

void RangedDownload::notify_retry(int attempt, const std::string& reason,
                                  std::chrono::milliseconds delay) {
  std::lock_guard lock(events_mutex_);
  if (events_.retrying) events_.retrying(attempt, reason, delay);
}

void RangedDownload::fail(std::exception_ptr error) {
  std::lock_guard lock(mutex_);
  if (!failure_) failure_ = error;
  group_stop_.request_stop();
}

void RangedDownload::stop_workers() {
  std::lock_guard lock(mutex_);
  group_stop_.request_stop();
  cv_.notify_all();
}

// Feeds the hash with the bytes between what it has seen and the end of the contiguous prefix.
void RangedDownload::hash_prefix() {
  std::uint64_t prefix = 0;
  {
    std::lock_guard lock(mutex_);
    std::vector<const Segment*> order;
    for (const auto& s : segments_) order.push_back(&s);
    std::sort(order.begin(), order.end(),
              [](const Segment* a, const Segment* b) { return a->begin < b->begin; });
    for (const Segment* s : order) {
      if (s->begin != prefix) break;
      prefix = s->written;
      if (!s->complete()) break;
      prefix = s->end;
    }
  }
  if (prefix > hashed_) {
    hash_file_range(fd_.get(), part_path_, hashed_, prefix, hash_);
    hashed_ = prefix;
    if (events_.prefix_committed) events_.prefix_committed(fd_.get(), hashed_);
  }
}

void RangedDownload::report_progress() {
  std::uint64_t written = 0;
  std::vector<Range> on_disk;
  {
    std::lock_guard lock(mutex_);
    for (const auto& s : segments_) {
      written += s.written - s.begin;
      if (events_.ranges_written) on_disk.push_back({s.begin, s.written});
    }
  }
  if (events_.progress) events_.progress(written);
  if (events_.ranges_written && fd_)
    events_.ranges_written(fd_.get(), merged_ranges(std::move(on_disk)));
}

// The done ranges are only claimed after the part's data is on disk.
void RangedDownload::persist() {
  std::vector<Range> done;
  {
    std::lock_guard lock(mutex_);
    for (const auto& s : segments_) done.push_back({s.begin, s.written});
  }
  done = merged_ranges(std::move(done));
  if (done == persisted_) return;
  if (::fdatasync(fd_.get()) != 0) {
    const int error = errno;
    // The kernel may have dropped the pages it failed to write: which ranges hold data is
    // unknown, so none are trusted.
    discard_part();
    throw_disk_error("sync", part_path_, error);
  }
  staged_.write_sidecar(range_sidecar_json(file_, hash_.expected(), done));
  persisted_ = done;
}

void RangedDownload::discard_part() {
  fd_ = catalog::UniqueFd();
  staged_.discard();
}

}  // namespace ranged

bool wants_ranges(const DownloadPolicy& policy, const FileToFetch& file, const StagedFile& staged) {
  if (staged.read_sidecar() && staged.has_part()) {
    return true;  // a ranged download to resume, whatever the policy says now
  }
  return policy.connections > 1 && file.size >= 2 * policy.min_range_bytes;
}

RangedOutcome fetch_in_ranges(const HubClient& hub, const DownloadPolicy& policy,
                              const catalog::ModelId& repo, const std::string& commit,
                              const FileToFetch& file, const StagedFile& staged,
                              const std::stop_token& stop, const DownloadEvents& events,
                              ConnectionBudget* extra_connections, std::string& mismatch_reason) {
  ranged::RangedDownload download(hub, policy, repo, commit, file, staged, stop, events,
                                  extra_connections);
  return download.run(mismatch_reason);
}

}  // namespace rbee::provisioner
