#include "rbee/jobs/cancellation.hpp"

namespace rbee::jobs {

void CancellationToken::throw_if_cancelled() const {
  if (cancelled()) throw JobCancelled();
}

bool CancellationToken::wait_for(std::chrono::milliseconds duration) const {
  std::unique_lock lock(mutex_);
  // The stop_token overload wakes on cancellation; it returns the predicate's value, which is
  // false both on timeout and on cancellation, so the token itself tells which one it was.
  changed_.wait_for(lock, source_.get_token(), duration, [] { return false; });
  return !cancelled();
}

}  // namespace rbee::jobs
