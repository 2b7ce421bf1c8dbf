#pragma once
// DownloadStats: what every download of this process has done so far, for /metrics.

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <string>

namespace rbee::provisioner {

// Thread-safe; counters only grow. The speed is measured over the last few whole seconds, so
// a scrape at any moment sees the current rate, not an average since the previous scrape.
class DownloadStats {
 public:
  struct Snapshot {
    std::uint64_t bytes_downloaded = 0;    // received from the network and written to part files
    std::uint64_t bytes_for_mirror = 0;    // of those, by downloads the mirror pulled through
    std::uint64_t bytes_reused = 0;        // Xet chunks copied from files on disk instead
    std::uint64_t bytes_written_back = 0;  // of verified files, written back while downloading
    std::uint64_t retries = 0;             // attempts again after a failure (listing or transfer)
    std::map<std::string, std::uint64_t> errors_by_kind;  // failed files and failed jobs
    double bytes_per_second = 0;
  };

  void add_bytes(std::uint64_t bytes, bool for_mirror = false);
  void add_reused(std::uint64_t bytes);
  void add_written_back(std::uint64_t bytes);
  void add_retry();
  void add_error(const std::string& kind);
  Snapshot snapshot() const;

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t kWindowSeconds = 3;  // whole seconds averaged for the speed

  void advance_locked(std::int64_t second) const;

  mutable std::mutex mutex_;
  Snapshot totals_;
  const Clock::time_point epoch_ = Clock::now();
  // Bytes per second for the current second and the kWindowSeconds before it.
  mutable std::array<std::uint64_t, kWindowSeconds + 1> buckets_{};
  mutable std::int64_t current_second_ = 0;
};

// The label /metrics gives an error: a HubError's kind (repo_not_found, network, …), a
// DownloadError's (hash_mismatch, disk, gave_up), "refused" for a ProvisionError, else "other".
std::string error_kind(const std::exception& error);

}  // namespace rbee::provisioner
