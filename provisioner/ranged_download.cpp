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
#include "rbee/provisioner/content_range.hpp"
#include "retry.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace rbee::provisioner {
namespace {

using Clock = std::chrono::steady_clock;

// Per connection: libcurl's receive buffer and the write batch. Many connections run at once,
// so each reads and writes less than a lone one does (HttpRequest::receive_buffer): 32 of them
// hold 16 MiB.
constexpr std::size_t kWriteBatch = 256 << 10;
constexpr long kReceiveBuffer = 256 << 10;
constexpr int kStartConnections = 4;               // the adaptive controller's first step
constexpr std::uint64_t kMinStealBytes = 1 << 20;  // never split a remainder under 2× this
constexpr auto kTick = 100ms;                      // hashing and progress cadence
constexpr auto kPersistEvery = 1s;                 // fdatasync + sidecar cadence

using Range = ByteRange;

}  // namespace

std::vector<ByteRange> merged_ranges(std::vector<ByteRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::vector<Range> out;
  for (const auto& range : ranges) {
    if (range.end <= range.begin) continue;
    if (!out.empty() && range.begin <= out.back().end) {
      out.back().end = std::max(out.back().end, range.end);
    } else {
      out.push_back(range);
    }
  }
  return out;
}

std::string range_sidecar_json(const FileToFetch& file, std::string_view checksum,
                               const std::vector<ByteRange>& done) {
  nlohmann::json json = {{"version", 1}, {"size", file.size}, {"checksum", checksum}};
  json["done"] = nlohmann::json::array();
  for (const auto& range : done) json["done"].push_back({range.begin, range.end});
  return narration::dump_json(json);
}

namespace {

std::vector<Range> merged(std::vector<Range> ranges) {
  return merged_ranges(std::move(ranges));
}

// One piece of the file, fetched by one connection at a time.
struct Segment {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;       // shrinks when another connection takes over the tail
  std::uint64_t written = 0;   // bytes before this offset are on disk
  std::uint64_t received = 0;  // bytes before this offset are accepted (written, or batched)
  bool taken = false;
  bool complete() const { return written >= end; }
};

// One connection's thread. Its HTTP connection is reused across the segments it fetches
// (libcurl reconnects when the origin changes).
struct Worker {
  std::atomic<std::uint64_t> received{0};  // body bytes, for the speed comparisons
  std::atomic<bool> retire{false};         // leave now, releasing the segment to the others
  std::stop_source stop;                   // ends its transfer: retired, or the group stops
  Clock::time_point started = Clock::now();
  std::uint64_t window_received = 0;  // the coordinator's: `received` at the last speed check
  bool finished = false;              // guarded by the download's mutex
  bool refused = false;               // leaving after a 429/503 (its own thread only)
  std::vector<char> batch;            // the write batch, allocated once (its own thread only)
  std::unique_ptr<HttpConnection> http;
  std::jthread thread;  // last: joined first
};

class RangedDownload {
 public:
  RangedDownload(const HubClient& hub, const DownloadPolicy& policy, const catalog::ModelId& repo,
                 const std::string& commit, const FileToFetch& file, const StagedFile& staged,
                 const std::stop_token& stop, const DownloadEvents& events,
                 ConnectionBudget* extra_connections)
      : extra_connections_(extra_connections),
        hub_(hub),
        policy_(policy),
        repo_(repo),
        commit_(commit),
        file_(file),
        staged_(staged),
        part_path_(staged.part_path()),
        stop_(stop),
        events_(events),
        hash_(file) {}

  RangedOutcome run(std::string& mismatch_reason) {
    prepare_part();
    run_workers();
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
    if (actual != hash_.expected()) {
      mismatch_reason = fmt::format("{} mismatch for {}: expected {}, got {}", hash_.algorithm(),
                                    file_.path, hash_.expected(), actual);
      discard_part();
      return RangedOutcome::hash_mismatch;
    }
    commit_part();
    return RangedOutcome::verified;
  }

 private:
  // Opens (or creates) the part, learns what is already on disk, and preallocates the rest.
  void prepare_part() {
    auto part = open_resumable_part(staged_, file_);
    fd_ = std::move(part.fd);
    persisted_ = part.done;
    preallocate();
    plan_segments(part.done);
  }

  void preallocate() {
    const int error = ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(file_.size));
    if (error == 0) return;
    if (error == EOPNOTSUPP || error == EINVAL) {  // e.g. some network file systems
      if (::ftruncate(fd_.get(), static_cast<off_t>(file_.size)) == 0) return;
      throw_disk_error("extend", part_path_, errno);
    }
    throw_disk_error("allocate space for", part_path_, error);
  }

  // The gaps between the done ranges, cut into pieces of about remaining / connections.
  void plan_segments(const std::vector<Range>& done) {
    std::vector<Range> gaps;
    std::uint64_t cursor = 0;
    for (const auto& range : done) {
      if (range.begin > cursor) gaps.push_back({cursor, range.begin});
      segments_.push_back({range.begin, range.end, range.end, range.end, false});
      cursor = range.end;
    }
    if (cursor < file_.size) gaps.push_back({cursor, file_.size});
    std::uint64_t remaining = 0;
    for (const auto& gap : gaps) remaining += gap.end - gap.begin;
    const auto connections = static_cast<std::uint64_t>(std::max(1, policy_.connections));
    const std::uint64_t piece = std::max<std::uint64_t>(
        policy_.min_range_bytes, (remaining + connections - 1) / connections);
    for (const auto& gap : gaps) {
      for (std::uint64_t begin = gap.begin; begin < gap.end; begin += piece) {
        const std::uint64_t end = std::min(gap.end, begin + piece);
        segments_.push_back({begin, end, begin, begin, false});
      }
    }
    const int useful = static_cast<int>(
        std::clamp<std::uint64_t>((remaining + policy_.min_range_bytes - 1) /
                                      std::max<std::uint64_t>(policy_.min_range_bytes, 1),
                                  1, connections));
    controller_.emplace(useful, policy_.adaptive_connections ? kStartConnections : useful);
  }

  void run_workers() {
    std::stop_callback relay_stop(stop_, [this] { stop_workers(); });
    report_progress();  // what is already on disk, before any byte of this run arrives
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
  void coordinate() {
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

  void start_worker(ConnectionLease lease) {
    {
      std::lock_guard lock(mutex_);
      ++workers_started_;
    }
    auto& worker = *workers_.emplace_back(std::make_unique<Worker>());
    worker.thread = std::jthread([this, &worker, lease = std::move(lease)] { work(worker); });
  }

  int open_workers() {
    std::lock_guard lock(mutex_);
    return workers_started_ - workers_done_;
  }

  // Up to the controller's target, each extra connection paid from the budget. True when the
  // target is reached, or cannot be (no budget, or no work worth another connection).
  bool add_workers() {
    while (open_workers() < controller_->target()) {
      if (!has_work_to_share()) return false;
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
  void steer_connections() {
    int refused_with = 0;
    {
      std::lock_guard lock(mutex_);
      refused_with = std::exchange(refused_with_others_, 0);
    }
    if (refused_with > 0) controller_->refused(refused_with);
    const bool reached = add_workers();
    std::uint64_t received = 0;
    for (const auto& worker : workers_) received += worker->received.load();
    // A count the budget or the work left cannot reach is judged as it is.
    const int open = open_workers();
    controller_->sample(Clock::now(), received, reached ? open : controller_->target());
    retire_surplus();
    replace_slow_connection();
    if (controller_->settled()) report_connections(controller_->reason());
  }

  void report_connections(const std::string& reason) {
    if (std::exchange(settled_reported_, true)) return;
    std::lock_guard lock(events_mutex_);
    if (events_.connections_settled) events_.connections_settled(controller_->target(), reason);
  }

  std::vector<Worker*> running_workers() {
    std::vector<Worker*> running;
    std::lock_guard lock(mutex_);
    for (const auto& worker : workers_) {
      if (!worker->finished && !worker->retire) running.push_back(worker.get());
    }
    return running;
  }

  // The worker leaves at once (its transfer is woken and ends), releasing its segment.
  static void retire(Worker& worker) {
    worker.retire = true;
    worker.stop.request_stop();
  }

  // Above the target (the controller went back a step): the newest connections leave.
  void retire_surplus() {
    auto running = running_workers();
    for (int surplus = static_cast<int>(running.size()) - controller_->target(); surplus > 0;
         --surplus) {
      retire(*running.back());
      running.pop_back();
    }
  }

  // A connection far slower than the median (a bad route, a slow CDN node) leaves; the next
  // tick opens a fresh one in its place, which takes over its segment. This is the tail that
  // makes other downloaders stick at 99%.
  void replace_slow_connection() {
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

  // An unfinished segment nobody fetches, with the download still on.
  bool has_unclaimed_work() {
    std::lock_guard lock(mutex_);
    if (group_stop_.stop_requested()) return false;
    return std::any_of(segments_.begin(), segments_.end(),
                       [](const Segment& s) { return !s.taken && !s.complete(); });
  }

  bool has_work_to_share() {
    std::lock_guard lock(mutex_);
    if (group_stop_.stop_requested()) return false;
    for (const auto& s : segments_) {
      if (!s.taken && !s.complete()) return true;
      if (s.taken && s.end - s.received >= 2 * kMinStealBytes) return true;
    }
    return false;
  }

  void work(Worker& worker) {
    std::stop_callback relay_group_stop(group_stop_.get_token(),
                                        [&worker] { worker.stop.request_stop(); });
    try {
      while (!worker.retire) {
        const auto index = claim_segment();
        if (!index) break;
        fetch_segment(*index, worker);
      }
    } catch (...) {
      fail(std::current_exception());
    }
    worker.http.reset();  // the connection closes before the coordinator counts this one out
    std::lock_guard lock(mutex_);
    if (worker.refused) --refused_open_;
    worker.finished = true;
    ++workers_done_;
    cv_.notify_all();
  }

  // An untaken unfinished segment, or half of the largest remainder another connection is
  // still receiving; nullopt when nothing worth a connection is left.
  std::optional<std::size_t> claim_segment() {
    std::lock_guard lock(mutex_);
    if (group_stop_.stop_requested()) return std::nullopt;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      if (!segments_[i].taken && !segments_[i].complete()) {
        segments_[i].taken = true;
        return i;
      }
    }
    std::optional<std::size_t> largest;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      const auto& s = segments_[i];
      if (s.taken && (!largest || s.end - s.received >
                                      segments_[*largest].end - segments_[*largest].received)) {
        largest = i;
      }
    }
    if (!largest) return std::nullopt;
    const Segment victim = segments_[*largest];
    const std::uint64_t left = victim.end - victim.received;
    if (left < 2 * kMinStealBytes) return std::nullopt;
    const std::uint64_t split = victim.received + left / 2;
    segments_[*largest].end = split;  // its connection stops there and drops
    segments_.push_back({split, victim.end, split, split, true});
    return segments_.size() - 1;
  }

  void fetch_segment(std::size_t index, Worker& worker) {
    int failures = 0;
    for (;;) {
      std::uint64_t from = 0, to = 0;
      {
        std::lock_guard lock(mutex_);
        Segment& segment = segments_[index];
        segment.received = segment.written;  // an unflushed batch of a failed try is gone
        if (segment.complete() || group_stop_.stop_requested() || worker.retire) {
          segment.taken = false;
          return;
        }
        from = segment.written;
        to = segment.end;
      }
      int generation = 0;
      try {
        const ResolvedFile source = current_source(generation);
        transfer(index, source, worker, from, to);
      } catch (const HubError& error) {
        if (group_stop_.stop_requested()) continue;  // the loop top releases the segment
        std::uint64_t now_written;
        {
          std::lock_guard lock(mutex_);
          now_written = segments_[index].written;
        }
        if (now_written > from) failures = 0;  // bytes flowed: a new run of failures
        if (const int others = refused_while_others_run(error); others > 0) {
          notify_retry(0,
                       fmt::format("{}; its range goes to the other {} connection{}", error.what(),
                                   others, others == 1 ? "" : "s"),
                       {});
          worker.refused = true;
          worker.retire = true;  // the loop top releases the segment to the others
          continue;
        }
        if (error.kind() == HubErrorKind::forbidden && source_is_cdn(generation)) {
          refresh_source(generation, error);  // the signed URL expired, for every connection
          continue;
        }
        const auto delay = retry_delay_or_throw(policy_, file_.path, error, failures);
        notify_retry(failures, error.what(), delay);
        sleep_unless_stopped(delay, group_stop_.get_token());
      }
    }
  }

  // One GET of bytes [from, to) of segment `index`. Returns when the segment is complete (or
  // was shortened to what it has); throws HubError otherwise.
  // A 429 or 503 while other connections are served: the server's limit, not a passing fault.
  // Returns how many others there are (recorded for the controller), or 0 for an ordinary retry.
  int refused_while_others_run(const HubError& error) {
    if (error.kind() != HubErrorKind::rate_limited && error.status() != 503) return 0;
    std::lock_guard lock(mutex_);
    // Others refused at the same moment are leaving too: they are not served.
    const int others = workers_started_ - workers_done_ - refused_open_ - 1;
    if (others <= 0) return 0;  // the last connection retries, with backoff, as always
    ++refused_open_;
    refused_with_others_ =
        refused_with_others_ == 0 ? others : std::min(refused_with_others_, others);
    return others;
  }

  void transfer(std::size_t index, const ResolvedFile& source, Worker& worker, std::uint64_t from,
                std::uint64_t to) {
    if (!worker.http) worker.http = std::make_unique<HttpConnection>(hub_.settings());
    if (group_stop_.stop_requested()) return;
    HttpRequest request;
    request.url = source.url;
    request.headers = hub_.headers_for(source.send_token);
    request.headers.emplace("Range", fmt::format("bytes={}-{}", from, to - 1));
    request.stall_timeout = policy_.stall_timeout;
    request.stall_min_bytes = policy_.stall_min_bytes;
    request.receive_buffer = kReceiveBuffer;

    std::vector<char>& batch = worker.batch;
    batch.clear();
    batch.reserve(kWriteBatch);
    std::uint64_t batch_offset = from;
    auto flush = [&] {
      write_at(batch.data(), batch.size(), batch_offset);
      batch_offset += batch.size();
      batch.clear();
      std::lock_guard lock(mutex_);
      segments_[index].written = batch_offset;
    };
    bool wrong_range = false, reached_end = false;
    request.on_head = [&](const HttpResponseHead& head) {
      if (head.status == 200) {  // the server ignores Range: ranges are of no use here
        std::lock_guard lock(mutex_);
        ranges_refused_ = true;
        group_stop_.request_stop();
        return false;
      }
      if (head.status != 206) return false;
      wrong_range = !content_range_matches(head.header("Content-Range"), from, to - 1, file_.size);
      return !wrong_range;
    };
    request.on_body = [&](const char* data, std::size_t length) {
      if (worker.retire) return false;
      worker.received += length;
      std::uint64_t end;
      {
        std::lock_guard lock(mutex_);
        end = segments_[index].end;  // may have shrunk: another connection took the tail
        const std::uint64_t room = end - std::min(end, segments_[index].received);
        length = std::min<std::uint64_t>(length, room);
        segments_[index].received += length;
      }
      batch.insert(batch.end(), data, data + length);
      if (batch.size() >= kWriteBatch) flush();
      if (batch_offset + batch.size() >= end) {
        reached_end = true;
        return false;
      }
      return true;
    };
    const HttpResult result = worker.http->perform(request, worker.stop.get_token());
    if (!batch.empty()) flush();
    if (reached_end || group_stop_.stop_requested() || worker.retire) return;
    {
      std::lock_guard lock(mutex_);
      if (segments_[index].complete()) return;
    }
    const std::string what = fmt::format("{} (bytes {}-{})", file_.path, from, to - 1);
    const int status = result.head.status;
    if (wrong_range) {
      throw HubError(HubErrorKind::protocol,
                     fmt::format("{}: the server answered another range or file size", what));
    }
    if (status != 0 && status != 206) {
      throw hub_error_for(status, result.head.header("X-Error-Code"), what,
                          result.head.header("Retry-After"),
                          source.send_token && !hub_.settings().token.empty());
    }
    if (result.outcome == HttpOutcome::stalled) {
      throw HubError(
          HubErrorKind::network,
          fmt::format("{}: stalled (under {} bytes in {} ms) at byte {}", what,
                      policy_.stall_min_bytes, policy_.stall_timeout.count(), batch_offset));
    }
    throw HubError(HubErrorKind::network,
                   fmt::format("{}: connection lost at byte {} ({})", what, batch_offset,
                               result.outcome == HttpOutcome::complete ? "the body ended early"
                                                                       : result.error));
  }

  void write_at(const char* data, std::size_t length, std::uint64_t offset) {
    for (std::size_t done = 0; done < length;) {
      const ssize_t n =
          ::pwrite(fd_.get(), data + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_disk_error("write", part_path_, errno);
      done += static_cast<std::size_t>(n);
    }
  }

  // The file's URL, resolved once for all connections; `generation` says which resolution.
  ResolvedFile current_source(int& generation) {
    std::lock_guard lock(source_mutex_);
    if (!source_) {
      source_ = hub_.resolve(repo_, commit_, file_.path, nullptr, group_stop_.get_token());
      ++source_generation_;
    }
    generation = source_generation_;
    return *source_;
  }

  bool source_is_cdn(int generation) {
    std::lock_guard lock(source_mutex_);
    return generation == source_generation_ && source_ && !source_->send_token;
  }

  void refresh_source(int generation, const HubError& error) {
    std::lock_guard lock(source_mutex_);
    if (generation != source_generation_) return;  // another connection already did
    if (++url_refreshes_ > 3) throw error;
    source_.reset();
    notify_retry(0, std::string(error.what()) + "; refreshing the URL", {});
  }

  void notify_retry(int attempt, const std::string& reason, std::chrono::milliseconds delay) {
    std::lock_guard lock(events_mutex_);
    if (events_.retrying) events_.retrying(attempt, reason, delay);
  }

  void fail(std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    if (!failure_) failure_ = error;
    group_stop_.request_stop();
  }

  void stop_workers() {
    std::lock_guard lock(mutex_);
    group_stop_.request_stop();
    cv_.notify_all();
  }

  // Feeds the hash with the bytes between what it has seen and the end of the contiguous prefix.
  void hash_prefix() {
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

  void report_progress() {
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
      events_.ranges_written(fd_.get(), merged(std::move(on_disk)));
  }

  // The done ranges are only claimed after the part's data is on disk.
  void persist() {
    std::vector<Range> done;
    {
      std::lock_guard lock(mutex_);
      for (const auto& s : segments_) done.push_back({s.begin, s.written});
    }
    done = merged(std::move(done));
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

  void discard_part() {
    fd_ = catalog::UniqueFd();
    staged_.discard();
  }

  void commit_part() { staged_.publish(fd_.get()); }

  ConnectionBudget* extra_connections_;
  const HubClient& hub_;
  const DownloadPolicy& policy_;
  const catalog::ModelId& repo_;
  const std::string& commit_;
  const FileToFetch& file_;
  const StagedFile& staged_;
  const fs::path part_path_;
  const std::stop_token& stop_;
  const DownloadEvents& events_;

  FileHash hash_;  // the coordinator's thread only
  std::uint64_t hashed_ = 0;
  std::vector<Range> persisted_;
  catalog::UniqueFd fd_;
  std::optional<AdaptiveConnections> controller_;  // made once the work is planned
  bool settled_reported_ = false;
  Clock::time_point last_speed_check_ = Clock::now();
  int replacements_ = 0;
  double typical_rate_ = 0;  // a connection's median speed in the last window with 3 or more
  static constexpr double kSlowFactor = 4;  // "far slower than the median"

  std::mutex mutex_;  // guards what follows
  std::condition_variable cv_;
  std::vector<Segment> segments_;
  int workers_started_ = 0;
  int workers_done_ = 0;
  int refused_with_others_ = 0;  // the fewest others open at a 429/503 since the last tick
  int refused_open_ = 0;         // refused connections not yet closed
  bool ranges_refused_ = false;
  std::exception_ptr failure_;
  std::stop_source group_stop_;

  std::mutex source_mutex_;  // guards the resolved URL
  std::optional<ResolvedFile> source_;
  int source_generation_ = 0;
  int url_refreshes_ = 0;

  std::mutex events_mutex_;  // the caller's retry callback is called from one thread at a time

  // The coordinator's thread only; last, so joined first.
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace

namespace {

// What of a part of `part_length` bytes a download may keep: the ranges its sidecar records,
// else the prefix a single connection wrote (a part without a sidecar is always one);
// nullopt when neither can be trusted (a sidecar of another file, a part longer than the file).
std::optional<std::vector<ByteRange>> kept_ranges(const StagedFile& staged, const FileToFetch& file,
                                                  std::uint64_t part_length) {
  if (const auto sidecar = staged.read_sidecar()) {
    return parse_range_sidecar(*sidecar, file.size, expected_checksum(file));
  }
  if (part_length > file.size) return std::nullopt;
  return merged_ranges({{0, part_length}});
}

}  // namespace

std::uint64_t resumable_bytes(const StagedFile& staged, const FileToFetch& file) {
  if (!staged.has_part()) return 0;
  std::uint64_t bytes = 0;
  for (const auto& range :
       kept_ranges(staged, file, staged.part_size()).value_or(std::vector<ByteRange>{})) {
    bytes += range.end - range.begin;
  }
  return bytes;
}

ResumablePart open_resumable_part(const StagedFile& staged, const FileToFetch& file) {
  ResumablePart part{staged.open_part(), {}};
  const fs::path part_path = staged.part_path();
  const off_t length = ::lseek(part.fd.get(), 0, SEEK_END);
  if (length < 0) throw_disk_error("seek", part_path, errno);
  // An untrusted part's layout is unknown (it may be preallocated, full of holes): it starts
  // over rather than keep any of it.
  if (auto kept = kept_ranges(staged, file, static_cast<std::uint64_t>(length))) {
    part.done = std::move(*kept);
  } else if (::ftruncate(part.fd.get(), 0) != 0) {
    throw_disk_error("truncate", part_path, errno);
  }
  staged.write_sidecar(range_sidecar_json(file, expected_checksum(file), part.done));
  return part;
}

std::optional<std::vector<ByteRange>> parse_range_sidecar(std::string_view text,
                                                          std::uint64_t file_size,
                                                          std::string_view checksum) {
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  const auto version = json.find("version"), size = json.find("size"), sum = json.find("checksum"),
             done = json.find("done");
  if (version == json.end() || *version != 1 || size == json.end() || !size->is_number_unsigned() ||
      size->get<std::uint64_t>() != file_size || sum == json.end() || !sum->is_string() ||
      sum->get<std::string>() != checksum || done == json.end() || !done->is_array()) {
    return std::nullopt;
  }
  std::vector<ByteRange> ranges;
  for (const auto& pair : *done) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_unsigned() ||
        !pair[1].is_number_unsigned()) {
      return std::nullopt;
    }
    const ByteRange range{pair[0].get<std::uint64_t>(), pair[1].get<std::uint64_t>()};
    if (range.begin > range.end || range.end > file_size) return std::nullopt;
    ranges.push_back(range);
  }
  return merged(std::move(ranges));
}

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
  RangedDownload download(hub, policy, repo, commit, file, staged, stop, events, extra_connections);
  return download.run(mismatch_reason);
}

}  // namespace rbee::provisioner
