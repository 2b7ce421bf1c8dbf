#include "rbee/jobs/cancellation.hpp"

namespace rbee::jobs {

void CancellationToken::cancel() {
  {
    std::lock_guard lock(mutex_);
    cancelled_.store(true, std::memory_order_release);
  }
  changed_.notify_all();
}

void CancellationToken::throw_if_cancelled() const {
  if (cancelled()) throw JobCancelled();
}

bool CancellationToken::wait_for(std::chrono::milliseconds duration) const {
  std::unique_lock lock(mutex_);
  return !changed_.wait_for(lock, duration, [this] { return cancelled(); });
}

}  // namespace rbee::jobs
