#pragma once
// Retry timing shared by the listing and the file transfers (internal to the provisioner).

#include <chrono>
#include <optional>
#include <stop_token>

#include "rbee/provisioner/file_downloader.hpp"

namespace rbee::provisioner {

// Exponential backoff with full jitter (a random delay up to base·2^(failures-1), capped),
// never shorter than the server's Retry-After.
std::chrono::milliseconds backoff_delay(const DownloadPolicy& policy, int failures,
                                        std::optional<std::chrono::seconds> retry_after);

// Sleeps for `delay`; false when `stop` was requested first (it wakes at once).
bool sleep_unless_stopped(std::chrono::milliseconds delay, const std::stop_token& stop);

}  // namespace rbee::provisioner
