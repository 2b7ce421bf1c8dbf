#pragma once
// ModelProvisioner: turns a model_download request into verified files on disk, a catalog
// entry workers can trust, and narration an operator can follow.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include <rbee/catalog/file_lock.hpp>
#include <rbee/catalog/model_catalog.hpp>
#include <rbee/narration/narrator.hpp>

#include "rbee/provisioner/download_stats.hpp"
#include "rbee/provisioner/file_downloader.hpp"
#include "rbee/provisioner/hub_client.hpp"
#include "rbee/provisioner/live_files.hpp"
#include "rbee/provisioner/repo_snapshot.hpp"

namespace rbee::provisioner {

struct ProvisionerSettings {
  DownloadPolicy download;
  std::uint64_t disk_reserve_bytes = 1ULL << 30;  // left free beyond what the model needs
  std::chrono::milliseconds progress_interval{1000};
  std::size_t max_concurrent_downloads = 2;   // more wait, narrated as queued
  std::size_t parallel_files = 16;            // files of one job downloaded at once
  std::size_t max_download_connections = 64;  // across all jobs
  // After a download moves a ref: revisions no ref names that stay, newest first
  // (--keep-revisions; DESIGN §16). Every revision a ref names always stays.
  std::size_t keep_unnamed_revisions = 1;
  // Cache only (--offline): a download succeeds only for what the catalog already holds, and
  // no Hub is ever contacted.
  bool offline = false;
};

struct DownloadRequest {
  std::string model;  // "org/name" or "org/name:path/in/repo"
  std::string revision = "main";
  std::vector<std::string> include;  // fnmatch globs ('*' matches '/'); empty: every file
  std::vector<std::string> exclude;  // wins over include
  std::string job_id;                // narration is tagged with it
  std::optional<int> connections;    // overrides DownloadPolicy::connections for this job
  bool for_mirror = false;           // pulled through by the mirror (counted apart in stats)
};

// A download that cannot succeed as asked (nothing selected, hostile names, no disk space…).
class ProvisionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The disk cannot hold the model (checked before the download, or ENOSPC during it).
class NotEnoughDisk : public ProvisionError {
 public:
  using ProvisionError::ProvisionError;
};

// A pull the mirror started for a peer names another commit than the one this hive's model is
// at: it would move the model under the workers that load it, so it is refused.
class RevisionConflict : public ProvisionError {
 public:
  using ProvisionError::ProvisionError;
};

// --offline, and the cache does not hold what was asked.
class NotInCache : public ProvisionError {
 public:
  using ProvisionError::ProvisionError;
};

// Thread-safe: any number of download() calls at once; at most max_concurrent_downloads run,
// and two for one model never download twice (the later one follows the earlier's progress,
// then finds the model up to date), in one process or across processes sharing the cache.
class ModelProvisioner {
 public:
  // `fallbacks`: further Hubs, tried in order when a listing cannot be had from the one before
  // (unreachable, or 5xx); the files then come from the Hub that listed them. Each HubClient
  // sends only its own token.
  ModelProvisioner(HubClient hub, catalog::ModelCatalog& catalog,
                   const narration::Narrator& narrator, ProvisionerSettings settings,
                   std::vector<HubClient> fallbacks = {});
  ~ModelProvisioner();

  // Blocks until the model is ready. Throws HubError, DownloadError, ProvisionError,
  // catalog::CatalogError, or DownloadCancelled soon after `stop`; the catalog says the same
  // (failed with the reason, or cancelled) and part files stay for resume.
  void download(const DownloadRequest& request, std::stop_token stop);

  // At start-up: entries left `downloading` by a hive that died are marked `interrupted`
  // (unless a live download in another process holds them), and deletes a dead hive left
  // half done (`deleting`, a model or one revision) are finished. Returns how many entries
  // were marked or removed.
  std::size_t mark_interrupted_downloads();

  const DownloadStats& stats() const { return stats_; }
  // The files being downloaded now, readable as they grow (the mirror's pull-through).
  const LiveFiles& live_files() const { return live_files_; }
  // After the model was deleted: closes every descriptor this process holds of its files and
  // cuts off readers of them (the mirror's), so its disk space is freed and nothing is served.
  void forget_model_files(const catalog::ModelId& id) { live_files_.forget_model(id.str()); }
  const ProvisionerSettings& settings() const { return settings_; }
  const HubClient& hub() const { return hubs_.front(); }
  std::size_t active_downloads() const;  // holding one of max_concurrent_downloads places

 private:
  class DownloadSlot;
  // What one download() found before it began. An attempt never touches a ready revision (a
  // new one is new blobs and a new snapshot, DESIGN §16), so one that fails leaves a ready model
  // exactly as it was, the failure recorded on the commit it tried (workers read the catalog: a
  // wrong `failed` takes a working model off the cluster).
  struct Attempt {
    std::optional<catalog::ModelEntry> before;
    std::optional<RepoSnapshot> snapshot_before;  // the mirror's listing
    std::string commit;                           // the commit it downloads, once listed
    bool keeps_ready() const { return before && before->status == catalog::ModelStatus::ready; }
  };
  // After a failed attempt: puts a ready model back as it was, with the attempted commit's
  // record saying `status` and `reason` (true); else leaves recording the failure to the caller
  // (false).
  bool restore_if_untouched(const Attempt& attempt, const DownloadRequest& request,
                            catalog::ModelStatus status, const std::string& reason);
  // restore_if_untouched, else record_failure with `reason`.
  void record_failed_attempt(const Attempt& attempt, const catalog::ModelId& id,
                             const DownloadRequest& request, const std::string& reason);
  std::unique_ptr<catalog::FileLock> acquire_model_lock(const DownloadRequest& request,
                                                        const catalog::ModelId& id,
                                                        const std::stop_token& stop);
  // The listing, and the Hub (of hubs_) that gave it.
  std::pair<RepoInfo, const HubClient*> list_repo(const DownloadRequest& request,
                                                  const catalog::ModelId& id,
                                                  const std::stop_token& stop);
  void refuse_revision_conflict(const DownloadRequest& request, const catalog::ModelId& id,
                                const RepoInfo& info,
                                const std::optional<catalog::ModelEntry>& current) const;
  void download_listed(const DownloadRequest& request, const catalog::ModelId& id,
                       const RepoInfo& info, const HubClient& hub, Attempt& attempt,
                       const std::stop_token& stop);
  // A gated repo: throws the Hub's HubError when it refuses this token the first file to fetch.
  void check_gated_access(const HubClient& hub, const RepoInfo& info, const catalog::ModelId& id,
                          const std::vector<catalog::ModelFile>& files,
                          const std::stop_token& stop) const;
  // Links the entry's verified files into its commit's snapshot, then moves the ref; writes the
  // entry with the revision ready.
  void publish_revision(const DownloadRequest& request, catalog::ModelEntry entry);
  void prune_unnamed_revisions(const DownloadRequest& request, const catalog::ModelId& id);
  // Downloads the entry's files that are not verified yet; `entry` is the catalog's entry as
  // this job last wrote it, kept up to date in memory and written from there.
  void download_files(const DownloadRequest& request, catalog::ModelEntry& entry,
                      const HubClient& hub, const std::stop_token& stop);
  // --offline: succeeds when the catalog holds what `request` asks for, else NotInCache.
  void serve_from_cache(const DownloadRequest& request, const catalog::ModelId& id);
  // The error's message, with the free space and the bytes still needed when it is a full disk.
  std::string explain_out_of_space(const std::exception& error, const catalog::ModelId& id,
                                   std::uint64_t still_needed) const;
  void record_failure(const catalog::ModelId& id, const DownloadRequest& request,
                      const std::string& reason);

  std::vector<HubClient> hubs_;   // the endpoint, then its fallbacks
  ConnectionBudget connections_;  // every job's connections draw on it
  catalog::ModelCatalog& catalog_;
  const narration::Narrator& narrator_;
  ProvisionerSettings settings_;
  DownloadStats stats_;
  LiveFiles live_files_;
  std::shared_ptr<xet::ChunkIndex> chunk_index_;  // Xet chunks on disk, for every job

  mutable std::mutex slots_mutex_;
  std::condition_variable_any slot_freed_;
  std::size_t running_downloads_ = 0;
};

// Every file of `siblings` that `request` selects: the one file of "org/name:file", or those
// matching include and no exclude. Throws HubError (entry_not_found) for a missing single file.
std::vector<Sibling> select_files(const std::vector<Sibling>& siblings,
                                  const std::optional<std::string>& single_file,
                                  const std::vector<std::string>& include,
                                  const std::vector<std::string>& exclude);

}  // namespace rbee::provisioner
