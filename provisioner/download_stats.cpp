#include "rbee/provisioner/download_stats.hpp"

#include <algorithm>

#include <rbee/catalog/errors.hpp>

#include "rbee/provisioner/file_downloader.hpp"
#include "rbee/provisioner/hub_client.hpp"
#include "rbee/provisioner/model_provisioner.hpp"

namespace rbee::provisioner {

void DownloadStats::advance_locked(std::int64_t second) const {
  // Seconds nobody downloaded in leave empty buckets behind.
  current_second_ = std::max(current_second_, second - static_cast<std::int64_t>(buckets_.size()));
  for (; current_second_ < second; ++current_second_) {
    buckets_[static_cast<std::size_t>(current_second_ + 1) % buckets_.size()] = 0;
  }
}

void DownloadStats::add_bytes(std::uint64_t bytes, bool for_mirror) {
  const auto second =
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - epoch_).count();
  std::lock_guard lock(mutex_);
  advance_locked(second);
  buckets_[static_cast<std::size_t>(second) % buckets_.size()] += bytes;
  totals_.bytes_downloaded += bytes;
  if (for_mirror) totals_.bytes_for_mirror += bytes;
}

void DownloadStats::add_reused(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  totals_.bytes_reused += bytes;
}

void DownloadStats::add_written_back(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  totals_.bytes_written_back += bytes;
}

void DownloadStats::add_retry() {
  std::lock_guard lock(mutex_);
  ++totals_.retries;
}

void DownloadStats::add_error(const std::string& kind) {
  std::lock_guard lock(mutex_);
  ++totals_.errors_by_kind[kind];
}

DownloadStats::Snapshot DownloadStats::snapshot() const {
  const auto second =
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - epoch_).count();
  std::lock_guard lock(mutex_);
  advance_locked(second);
  Snapshot snapshot = totals_;
  std::uint64_t window = 0;  // the last whole seconds; the current one is still filling
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    if (i != static_cast<std::size_t>(second) % buckets_.size()) window += buckets_[i];
  }
  const auto seconds = std::min<std::int64_t>(second, kWindowSeconds);
  snapshot.bytes_per_second = seconds > 0 ? static_cast<double>(window) / seconds : 0;
  return snapshot;
}

std::string error_kind(const std::exception& error) {
  if (const auto* hub = dynamic_cast<const HubError*>(&error)) {
    return std::string(to_string(hub->kind()));
  }
  if (const auto* download = dynamic_cast<const DownloadError*>(&error)) {
    switch (download->kind()) {
      case DownloadErrorKind::hash_mismatch:
        return "hash_mismatch";
      case DownloadErrorKind::disk:
        return "disk";
      case DownloadErrorKind::gave_up:
        return "gave_up";
    }
  }
  if (dynamic_cast<const NotEnoughDisk*>(&error)) return "not_enough_disk";
  if (dynamic_cast<const NotInCache*>(&error)) return "not_in_cache";
  if (dynamic_cast<const RevisionConflict*>(&error)) return "revision_conflict";
  if (dynamic_cast<const ProvisionError*>(&error)) return "refused";
  if (dynamic_cast<const catalog::CatalogError*>(&error)) return "catalog";
  return "other";
}

}  // namespace rbee::provisioner
