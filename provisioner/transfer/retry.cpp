#include "rbee/provisioner/retry.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>

#include <fmt/format.h>

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

std::chrono::milliseconds retry_delay_or_throw(const DownloadPolicy& policy,
                                               const std::string& file, const HubError& error,
                                               int& failures) {
  if (!error.retryable()) throw error;
  if (++failures >= policy.max_attempts) {
    throw DownloadError(
        DownloadErrorKind::gave_up,
        fmt::format("{} failed {} times in a row, giving up: {}", file, failures, error.what()));
  }
  return backoff_delay(policy, failures, error.retry_after());
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
