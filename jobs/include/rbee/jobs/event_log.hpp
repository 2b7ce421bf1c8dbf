#pragma once
// EventLog: a job's append-only log of SSE data lines, numbered from 1, read by any number
// of subscribers from any position (replay), ended by exactly one terminal line.

#include <chrono>
#include <condition_variable>
#include <cstdint>
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

// Thread-safe. Appends never block on readers; readers wait on a condition variable.
class EventLog {
 public:
  // Returns the entry's sequence number, or 0 when the log is already closed (dropped).
  std::uint64_t append(std::string data);
  // Appends the terminal line; false when the log was closed already (the first close wins).
  bool close(std::string terminal);

  struct Batch {
    std::vector<LogEntry> entries;  // every entry with seq > after, in order
    bool finished = false;          // the terminal entry is in this batch or was read before
  };
  // Returns at once when entries after `after` exist or the log is closed; otherwise waits up to
  // `timeout` for one (an empty, unfinished batch means the wait timed out).
  Batch read_after(std::uint64_t after, std::chrono::milliseconds timeout) const;

  std::uint64_t last_seq() const;
  bool closed() const;

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable appended_;
  std::vector<LogEntry> entries_;
  bool closed_ = false;
};

}  // namespace rbee::jobs
