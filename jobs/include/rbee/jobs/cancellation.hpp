#pragma once
// CancellationToken: cooperative, prompt cancellation for job handlers.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>

namespace rbee::jobs {

// Thrown by handlers (through throw_if_cancelled) to unwind when their job is cancelled.
class JobCancelled : public std::runtime_error {
 public:
  JobCancelled() : std::runtime_error("job cancelled") {}
};

// Thread-safe. cancel() wakes every wait_for() at once.
class CancellationToken {
 public:
  void cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  void throw_if_cancelled() const;

  // Sleeps for `duration` (retry backoff); returns false as soon as the token is cancelled.
  bool wait_for(std::chrono::milliseconds duration) const;

 private:
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
};

}  // namespace rbee::jobs
