#pragma once
// Retry timing shared by the listing (the model's story) and the file transfers.

#include <chrono>
#include <optional>
#include <stop_token>
#include <string>

#include "rbee/provisioner/file_downloader.hpp"

namespace rbee::provisioner {

// Exponential backoff with full jitter (a random delay up to base·2^(failures-1), capped),
// never shorter than the server's Retry-After.
std::chrono::milliseconds backoff_delay(const DownloadPolicy& policy, int failures,
                                        std::optional<std::chrono::seconds> retry_after);

// The wait before the next attempt at `file` after `error`, counting the failure in `failures`.
// Throws `error` again when it is not worth retrying (a 404, a gated repo…), and DownloadError
// (gave_up) once `failures` reaches the policy's limit.
std::chrono::milliseconds retry_delay_or_throw(const DownloadPolicy& policy,
                                               const std::string& file, const HubError& error,
                                               int& failures);

// Sleeps for `delay`; false when `stop` was requested first (it wakes at once).
bool sleep_unless_stopped(std::chrono::milliseconds delay, const std::stop_token& stop);

}  // namespace rbee::provisioner
