#pragma once
// CancellationToken: cooperative, prompt cancellation for job handlers.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <stop_token>

namespace rbee::jobs {

// Thrown by handlers (through throw_if_cancelled) to unwind when their job is cancelled.
class JobCancelled : public std::runtime_error {
 public:
  JobCancelled() : std::runtime_error("job cancelled") {}
};

// Thread-safe. cancel() wakes every wait_for() at once. Lower layers (the catalog) that must
// not know about jobs take the std::stop_token instead.
class CancellationToken {
 public:
  void cancel() { source_.request_stop(); }
  bool cancelled() const { return source_.stop_requested(); }
  std::stop_token stop_token() const { return source_.get_token(); }
  void throw_if_cancelled() const;

  // Sleeps for `duration` (retry backoff); returns false as soon as the token is cancelled.
  bool wait_for(std::chrono::milliseconds duration) const;

 private:
  std::stop_source source_;
  mutable std::mutex mutex_;
  mutable std::condition_variable_any changed_;
};

}  // namespace rbee::jobs
