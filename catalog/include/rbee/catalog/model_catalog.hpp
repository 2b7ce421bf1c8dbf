#pragma once
// ModelCatalog: the models on this machine in the Hugging Face cache layout (DESIGN §16), one
// metadata.yaml per model, under a root folder that may be shared with other HF tools:
//   <root>/models--<org>--<name>/blobs, snapshots, refs   (see repo_store.hpp)
//   <root>/models--<org>--<name>/metadata.yaml            the catalog entry (schema 2)
//   <root>/models--<org>--<name>/.rbee/                   the hive's working files (parts,
//                                                         sidecars, listings, temp files)
//   <root>/.locks/models--<org>--<name>/                  catalog.lock and download.lock
// HF tools ignore metadata.yaml and .rbee/, and skip .locks/ at the root (they keep their own
// locks there, one per blob, beside ours).
//
// Safe for many threads and processes at once: writers serialise on a per-model advisory lock
// and replace metadata.yaml atomically (temp file, fsync, rename, fsync of the folder), so
// readers never take a lock and never see a torn file. The folders below the root are reached
// without following symlinks (see Directory): a symlinked model folder is refused.

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <vector>

#include "rbee/catalog/directory.hpp"
#include "rbee/catalog/errors.hpp"
#include "rbee/catalog/model_entry.hpp"
#include "rbee/catalog/model_id.hpp"

namespace rbee::catalog {

class ModelCatalog {
 public:
  // Progress writes of one model closer together than this are skipped (DESIGN §4).
  static constexpr std::chrono::milliseconds kDefaultProgressInterval{1000};

  explicit ModelCatalog(std::filesystem::path root,
                        std::chrono::milliseconds progress_interval = kDefaultProgressInterval);

  // The hive's working folder inside every model folder.
  static constexpr std::string_view kWorkFolder = ".rbee";
  // metadata.yaml is at most this large (100 000 files take about 20 MiB); a larger one is
  // reported as unreadable rather than read into memory.
  static constexpr std::size_t kMaxMetadataBytes = 256u << 20;

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path model_dir(const ModelId& id) const;
  // <model>/snapshots/<commit>: what a worker loads (entry.path once the commit is whole).
  std::filesystem::path snapshot_dir(const ModelId& id, std::string_view commit) const;
  std::filesystem::path blob_path(const ModelId& id, std::string_view blob) const;
  // The model's folder, reached without following a symlink; nullopt when missing and not
  // `create`. Throws FileSystemError (a symlinked folder, a refusing disk).
  std::optional<Directory> open_model_dir(const ModelId& id, bool create) const;
  // The lock a downloader of `id` holds for the whole download, so two downloads of one model
  // (in one process or two) never write the same files.
  std::filesystem::path download_lock_path(const ModelId& id) const;
  // The lock every writer of the model's entry holds for its read-modify-write.
  std::filesystem::path lock_path(const ModelId& id) const;

  // Reader API (workers): never blocks on writers. An entry whose metadata.yaml cannot be read
  // or validated comes back with status failed and the reason in `error`, never dropped.
  std::vector<ModelEntry> list() const;  // sorted by id
  std::optional<ModelEntry> get(const ModelId& id) const;
  // The lstat of the model's metadata.yaml (nullopt without one): every write replaces the file,
  // so a reader that keeps a parsed entry reads it again only when this changes.
  std::optional<struct stat> entry_file_status(const ModelId& id) const;

  // Writer API. Each call holds the model's lock for its read-modify-write, waiting for another
  // writer (thread or process) as long as it holds it; throws CatalogError: io_error when the
  // disk refuses, leaving the previous metadata.yaml intact; cancelled when `stop` is requested
  // during that wait.
  void put(ModelEntry entry, std::stop_token stop = {});  // stamps updated_at (and added_at)
  // Applies `change` to the current entry (or a fresh one for `id`) and writes it.
  ModelEntry update(const ModelId& id, const std::function<void(ModelEntry&)>& change,
                    std::stop_token stop = {});
  // Status downloading with these byte counts; skipped (returns false) when the last progress
  // write of this model was less than the interval ago, unless done == total.
  bool update_progress(const ModelId& id, std::uint64_t bytes_done, std::uint64_t bytes_total,
                       std::stop_token stop = {});
  // Deletes the model's folder with its files and entry; false when there was none. The entry
  // is marked deleting first and removed last, so a crash on the way leaves "deleting" (which
  // a later remove finishes), never "ready" over missing files. The caller holds the model's
  // download lock, so no download (of this hive or another) writes the folder meanwhile.
  bool remove(const ModelId& id, std::stop_token stop = {});
  // metadata.yaml documents this catalog object has written since it was made.
  std::uint64_t writes() const { return writes_.load(); }

  // Removes the temp files a killed writer left in the working folders of models nobody is
  // writing now; returns how many.
  std::size_t remove_stale_temp_files() const;

 private:
  std::vector<ModelId> model_ids() const;
  std::optional<ModelEntry> read_entry(const ModelId& id) const;
  void write_entry(ModelEntry& entry) const;

  std::filesystem::path root_;
  std::chrono::milliseconds progress_interval_;
  mutable std::atomic<std::uint64_t> writes_{0};
  mutable std::mutex throttle_mutex_;
  std::map<std::string, std::chrono::steady_clock::time_point> last_progress_write_;
};

}  // namespace rbee::catalog
