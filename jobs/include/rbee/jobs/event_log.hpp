#pragma once
// EventLog: a job's append-only log of SSE data lines, numbered from 1, read by any number
// of subscribers from any position (replay), ended by exactly one terminal line.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace rbee::jobs {

// rbee's terminal markers: the last data line of every job stream.
inline constexpr std::string_view kDoneMarker = "[DONE]";
inline constexpr std::string_view kCancelledMarker = "[CANCELLED]";
std::string error_marker(std::string_view reason);  // "[ERROR] <reason on one line>"

struct LogEntry {
  std::uint64_t seq = 0;
  std::string data;  // one line: a JSON object or a terminal marker
};

// How an entry is kept.
enum class Retention {
  kept,        // until the log holds more than its cap, then the oldest go first
  superseded,  // a progress report: the next superseded entry replaces it (the latest is kept)
};

// Thread-safe. Appends never block on readers; readers wait on a condition variable.
// Memory is bounded: superseded entries are compacted to the latest one, and beyond
// `max_entries` the oldest entries are dropped. Sequence numbers stay increasing (and may
// skip), so replay and Last-Event-ID work across compaction.
class EventLog {
 public:
  static constexpr std::size_t kDefaultMaxEntries = 10000;
  explicit EventLog(std::size_t max_entries = kDefaultMaxEntries);

  // Returns the entry's sequence number, or 0 when the log is already closed (dropped).
  std::uint64_t append(std::string data, Retention retention = Retention::kept);
  // Appends the terminal line; false when the log was closed already (the first close wins).
  bool close(std::string terminal);

  struct Batch {
    std::vector<LogEntry> entries;  // every entry with seq > after, in order
    bool finished = false;          // the terminal entry is in this batch or was read before
  };
  // Returns at once when entries after `after` exist or the log is closed; otherwise waits up to
  // `timeout` for one (an empty, unfinished batch means the wait timed out).
  Batch read_after(std::uint64_t after, std::chrono::milliseconds timeout) const;

  std::uint64_t last_seq() const;  // 0 while empty
  bool closed() const;
  // True when `seq` is the id of the terminal entry (so a reader that saw it has seen the end).
  // One look under one lock: last_seq() then closed() could see a job end in between, and a
  // reader whose last id was the last event before the end would be told it had seen the end.
  bool is_terminal(std::uint64_t seq) const;
  std::size_t size() const;  // entries held now

 private:
  void drop_superseded_locked();

  const std::size_t max_entries_;
  mutable std::mutex mutex_;
  mutable std::condition_variable appended_;
  std::deque<LogEntry> entries_;  // increasing seq
  std::uint64_t last_seq_ = 0;
  std::uint64_t superseded_seq_ = 0;  // the superseded entry held now, 0 for none
  bool closed_ = false;               // the last entry is the terminal one
};

}  // namespace rbee::jobs
