#pragma once
// RangedDownload (internal): one large file over several connections (ranged_download.hpp).
// ranged_download.cpp is the coordinator: the part, the plan of segments, the connection count,
// hashing, progress and persistence; range_connections.cpp is one connection's life: claiming
// a segment (or half of another's), fetching it, and its failures.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "adaptive_connections.hpp"
#include "file_hash.hpp"
#include "http_connection.hpp"
#include "part_file.hpp"
#include "ranged_download.hpp"

namespace rbee::provisioner::ranged {

using Clock = std::chrono::steady_clock;

using Range = ByteRange;

// One piece of the file, fetched by one connection at a time with one request (another after a
// failure, from where it stopped).
struct Segment {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::uint64_t written = 0;  // bytes before this offset are on disk
  bool taken = false;
  bool complete() const { return written >= end; }
};

// One connection's thread. Its HTTP connection is reused across the segments it fetches
// (libcurl reconnects when the origin changes).
struct Worker {
  std::atomic<std::uint64_t> received{0};  // body bytes, for the speed comparisons
  std::atomic<bool> retire{false};         // leave now, releasing the segment to the others
  std::atomic<bool> leave{false};          // leave once the request in flight is done
  std::stop_source stop;                   // ends its transfer: retired, or the group stops
  // The next request's size (0: the first): about a second of this connection's speed, so a
  // request ends soon at any speed (a surplus connection leaves at its end) and a fast one
  // pays few round trips. Its own thread only.
  std::uint64_t request_bytes = 0;
  Clock::time_point started = Clock::now();
  std::uint64_t window_received = 0;  // the coordinator's: `received` at the last speed check
  bool finished = false;              // guarded by the download's mutex
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

  RangedOutcome run(std::string& mismatch_reason);

 private:
  // Opens (or creates) the part, learns what is already on disk, and preallocates the rest.
  void prepare_part();

  void preallocate();

  // The gaps between the done ranges, each unclaimed until connections cut requests from it.
  void plan_segments(const std::vector<Range>& done);

  void run_workers();

  // Until every connection is done: hash the growing prefix, report progress, persist, and
  // steer the connection count (adaptive_connections.hpp).
  void coordinate();

  void start_worker(ConnectionLease lease);

  int open_workers();

  // Up to the controller's target, each extra connection paid from the budget. True when the
  // target is reached, or cannot be (no budget, or no work worth another connection).
  bool add_workers();

  // One tick of the controller: refusals first, then the speed sample, then the count.
  void steer_connections();

  void report_connections(const std::string& reason);

  std::vector<Worker*> running_workers();

  // The worker leaves at once (its transfer is woken and ends), releasing its segment.
  static void retire(Worker& worker);

  // Above the target (the controller went back a step): the newest connections leave at the
  // end of their request in flight, so the bytes the server already sent are not wasted.
  void retire_surplus();

  // A connection far slower than the median (a bad route, a slow CDN node) leaves; the next
  // tick opens a fresh one in its place, which takes over its segment. This is the tail that
  // makes other downloaders stick at 99%.
  void replace_slow_connection();

  // An unfinished segment nobody fetches, with the download still on.
  bool has_unclaimed_work();

  void work(Worker& worker);

  // The lowest unclaimed bytes of the file, cut to one request of this connection's size, and
  // never more than an equal share of what is left for the most connections the file may get:
  // a connection the controller adds finds work, and near the end they all finish together.
  std::optional<std::size_t> claim_segment(const Worker& worker);

  void fetch_segment(std::size_t index, Worker& worker);

  // A 429 or 503 while other connections are served: the server's limit, not a passing fault.
  // Returns how many others there are (recorded for the controller), or 0 for an ordinary retry.
  int refused_while_others_run(const HubError& error);

  // One GET of bytes [from, to) of segment `index`. Returns when they are all written (or the
  // worker was retired or the group stopped); throws HubError otherwise.
  void transfer(std::size_t index, const ResolvedFile& source, Worker& worker, std::uint64_t from,
                std::uint64_t to);

  // The file's URL, resolved once for all connections; `generation` says which resolution.
  ResolvedFile current_source(int& generation);

  bool source_is_cdn(int generation);

  void refresh_source(int generation, const HubError& error);

  void notify_retry(int attempt, const std::string& reason, std::chrono::milliseconds delay);

  void fail(std::exception_ptr error);

  void stop_workers();

  // Feeds the hash with the bytes between what it has seen and the end of the contiguous prefix.
  void hash_prefix();

  void report_progress();

  // The done ranges are only claimed after the part's data is on disk.
  void persist();

  void discard_part();

  void commit_part() { staged_.publish(fd_.get()); }

  ConnectionBudget* extra_connections_;
  const HubClient& hub_;
  const DownloadPolicy& policy_;
  const catalog::ModelId& repo_;
  const std::string& commit_;
  const FileToFetch& file_;
  const StagedFile& staged_;
  const std::filesystem::path part_path_;
  const std::stop_token& stop_;
  const DownloadEvents& events_;

  FileHash hash_;  // the coordinator's thread only
  std::uint64_t hashed_ = 0;
  std::atomic<std::uint64_t> written_back_{0};  // bytes whose writeback the connections began
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
  std::atomic<int> share_between_{1};  // the controller's ceiling: claims are shares of it
  int workers_started_ = 0;
  int workers_done_ = 0;
  int refused_with_others_ = 0;  // the fewest others open at a 429/503 since the last tick
  int being_served_ = 0;         // connections receiving a body now
  int peak_served_ = 0;          // the most since the coordinator's last tick
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

}  // namespace rbee::provisioner::ranged
