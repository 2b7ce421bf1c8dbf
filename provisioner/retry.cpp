#include "retry.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>

namespace rbee::provisioner {

std::chrono::milliseconds backoff_delay(const DownloadPolicy& policy, int failures,
                                        std::optional<std::chrono::seconds> retry_after) {
  thread_local std::mt19937_64 random{std::random_device{}()};
  const auto cap = std::min<std::int64_t>(
      policy.backoff_max.count(), policy.backoff_base.count() << std::clamp(failures - 1, 0, 20));
  std::chrono::milliseconds delay{std::uniform_int_distribution<std::int64_t>(0, cap)(random)};
  if (retry_after) delay = std::max<std::chrono::milliseconds>(delay, *retry_after);
  return delay;
}

bool sleep_unless_stopped(std::chrono::milliseconds delay, const std::stop_token& stop) {
  std::mutex mutex;
  std::condition_variable_any wake;
  std::unique_lock lock(mutex);
  // The predicate never becomes true: only the stop token or the timeout end the wait.
  wake.wait_for(lock, stop, delay, [] { return false; });
  return !stop.stop_requested();
}

}  // namespace rbee::provisioner
