// What to fetch for a listed model: the files selected, checked (a path the hive can write, a
// checksum to verify against), what an earlier job left verified or half-downloaded, whether
// the disk can hold the rest; then the entry workers read, the transfers and the completion.
#include <fnmatch.h>

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <rbee/narration/human_units.hpp>

#include "model_story.hpp"
#include "rbee/provisioner/repo_snapshot.hpp"

#include <rbee/catalog/repo_store.hpp>
#include <rbee/catalog/revisions.hpp>

namespace rbee::provisioner {
namespace {

bool matches_any(const std::vector<std::string>& globs, const std::string& path) {
  // No FNM_PATHNAME: '*' also matches '/', as DESIGN §3 and huggingface_hub's patterns do.
  return std::any_of(globs.begin(), globs.end(), [&](const std::string& glob) {
    return ::fnmatch(glob.c_str(), path.c_str(), 0) == 0;
  });
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

ModelFile catalog_file(const Sibling& sibling) {
  return ModelFile{sibling.path,       sibling.size,
                   sibling.lfs_sha256, sibling.lfs_sha256.empty() ? sibling.blob_id : "",
                   "pending",          ""};
}

bool same_blob_verified(const ModelFile& file, const ModelFile& wanted) {
  return file.state == "verified" && file.size == wanted.size &&
         catalog::blob_name(file) == catalog::blob_name(wanted);
}

// The blob of `wanted` is one an earlier job verified, for this commit or any other (an
// unchanged file of a new revision is the same blob: nothing is downloaded or copied), and it
// is still on disk.
bool already_verified(const ModelEntry* entry, const ModelFile& wanted) {
  if (!entry) return false;
  const auto same = [&](const ModelFile& file) { return same_blob_verified(file, wanted); };
  bool known = std::ranges::any_of(entry->files, same);
  for (const auto& revision : entry->revisions) {
    known = known || std::ranges::any_of(revision.files, same);
  }
  return known && on_disk_with_size(wanted.blob, wanted.size);
}

}  // namespace

std::vector<Sibling> select_files(const std::vector<Sibling>& siblings,
                                  const std::optional<std::string>& single_file,
                                  const std::vector<std::string>& include,
                                  const std::vector<std::string>& exclude) {
  std::vector<Sibling> selected;
  for (const auto& sibling : siblings) {
    const bool wanted = single_file ? sibling.path == *single_file
                                    : (include.empty() || matches_any(include, sibling.path)) &&
                                          !matches_any(exclude, sibling.path);
    if (wanted) selected.push_back(sibling);
  }
  if (single_file && selected.empty()) {
    throw HubError(HubErrorKind::entry_not_found,
                   fmt::format("the repo has no file '{}'", *single_file));
  }
  return selected;
}

void ModelProvisioner::download_listed(const DownloadRequest& request, const ModelId& id,
                                       const RepoInfo& info, const HubClient& hub, Attempt& attempt,
                                       const std::stop_token& stop) {
  const auto reference = catalog::parse_model_reference(request.model);
  const auto started = Clock::now();
  auto narrate = [&](std::string action, std::string human, Level level = Level::info) {
    narrator_.emit({kActor, std::move(action), id.str(), std::move(human), request.job_id, level, 0,
                    std::nullopt});
  };

  // The commit names a snapshot folder (DESIGN §16): refused before any byte is fetched.
  if (!catalog::is_commit_id(info.commit)) {
    throw ProvisionError(fmt::format(
        "the Hub named the commit of {}@{} '{}', which is not 40 hex digits: refusing it", id.str(),
        narrator_.clean(request.revision), narrator_.clean(info.commit.substr(0, 64))));
  }
  const auto selected =
      select_files(info.siblings, reference.file, request.include, request.exclude);
  if (selected.empty()) {
    throw ProvisionError(
        fmt::format("no file of {} matches the include/exclude patterns", id.str()));
  }
  for (const auto& sibling : selected) {
    try {
      catalog::validate_repo_path(sibling.path);
    } catch (const catalog::CatalogError& error) {
      throw ProvisionError(fmt::format(
          "refusing {}: the Hub lists a file it cannot safely write: {}", id.str(), error.what()));
    }
    if (sibling.lfs_sha256.empty() && sibling.blob_id.empty()) {
      throw ProvisionError(fmt::format(
          "the Hub gave no checksum for {}: refusing an unverifiable file", sibling.path));
    }
    // The checksum names the file's blob (DESIGN §16): only hex may become a file name.
    if (!catalog::is_blob_name(sibling.lfs_sha256.empty() ? sibling.blob_id : sibling.lfs_sha256)) {
      throw ProvisionError(
          fmt::format("the Hub gave {} a checksum that is not a sha256 or git sha1: refusing it",
                      sibling.path));
    }
  }

  const auto& previous = attempt.before;
  refuse_revision_conflict(request, id, info, previous);
  attempt.commit = info.commit;
  const fs::path dir = catalog_.model_dir(id);
  const catalog::Directory model = *catalog_.open_model_dir(id, true);  // refuses a symlink
  try {
    attempt.snapshot_before =
        record_repo_snapshot(model, info, request.revision, hub.settings().listing);
  } catch (const std::exception& error) {
    // Only the mirror reads it: it then lists the repo again when asked.
    narrate(
        "snapshot_write_failed",
        fmt::format("Could not keep the listing of {} for the mirror: {}", id.str(), error.what()),
        Level::warn);
  }
  const ModelEntry* before = previous && previous->status != ModelStatus::failed &&
                                     previous->status != ModelStatus::deleting
                                 ? &*previous
                                 : nullptr;
  std::set<std::string_view> repo_paths;
  for (const auto& sibling : info.siblings) repo_paths.insert(sibling.path);
  std::vector<ModelFile> files;
  std::uint64_t total = 0, verified_bytes = 0, remaining = 0;
  // Files of this commit that an earlier job verified stay in the entry (one file, then
  // another, of the same repo: the catalog lists both).
  if (before && before->commit == info.commit) {
    std::set<std::string_view> selected_paths;
    for (const auto& sibling : selected) selected_paths.insert(sibling.path);
    for (const auto& kept : before->files) {
      if (kept.state == "verified" && !selected_paths.contains(kept.path) &&
          on_disk_with_size(kept.blob, kept.size)) {
        files.push_back(kept);
        total += kept.size;
        verified_bytes += kept.size;
      }
    }
  }
  for (const auto& sibling : selected) {
    ModelFile file = catalog_file(sibling);
    file.blob = catalog_.blob_path(id, catalog::blob_name(file)).string();
    if (already_verified(before, file)) {
      file.state = "verified";
      verified_bytes += file.size;
    } else {
      const bool adopt_legacy_part = !repo_paths.contains(file.path + ".part");
      remaining += file.size -
                   std::min(file.size, part_size_on_disk(model, to_fetch(file), adopt_legacy_part));
    }
    total += file.size;
    files.push_back(file);
  }

  if (before && before->status == ModelStatus::ready && before->commit == info.commit &&
      remaining == 0 && verified_bytes == total) {
    // The same commit by another name (a tag, the commit id) still gets its ref.
    publish_revision(request, *before);
    narrate("download_up_to_date",
            fmt::format("{} is already up to date: {} file{}, {}, nothing downloaded (commit {})",
                        id.str(), files.size(), files.size() == 1 ? "" : "s", format_bytes(total),
                        info.commit.substr(0, 12)));
    return;
  }

  const std::uint64_t available = free_bytes(dir);
  if (available < remaining + settings_.disk_reserve_bytes) {
    throw NotEnoughDisk(
        fmt::format("not enough disk space for {}: {} still to download plus {} kept free, but "
                    "only {} available",
                    id.str(), format_bytes(remaining), format_bytes(settings_.disk_reserve_bytes),
                    format_bytes(available)));
  }

  check_gated_access(hub, info, id, files, stop);
  ModelEntry entry = catalog_.update(id, [&](ModelEntry& e) {
    e.endpoint = hub.settings().endpoint;
    // The revision the hive's model follows is the operator's: a peer's pull of the same commit
    // by another name (a tag, the commit id) does not change it.
    if (!request.for_mirror || e.revision.empty()) e.revision = request.revision;
    e.commit = info.commit;
    // A worker loads the snapshot its ref names; before the first one is whole, the one coming.
    if (e.path.empty() || !e.refs.contains(e.revision)) {
      e.path = catalog_.snapshot_dir(id, info.commit).string();
    }
    e.revision_record(info.commit).status = ModelStatus::downloading;
    e.status = ModelStatus::downloading;
    e.bytes_total = total;
    e.bytes_done = verified_bytes;
    e.error.clear();
    e.files = files;
    e.last_job_id = request.job_id;
  });
  narrator_.emit({kActor, "download_started", id.str(),
                  fmt::format("Downloading {}@{} (commit {}): {} file{}, {}", id.str(),
                              request.revision, info.commit.substr(0, 12), files.size(),
                              files.size() == 1 ? "" : "s", format_bytes(total)),
                  request.job_id, Level::info, 0,
                  narration::Progress{"", 0, 0, 0, std::nullopt, verified_bytes, total, {}}});

  download_files(request, entry, hub, stop);
  entry.status = ModelStatus::ready;
  entry.bytes_done = total;
  entry.error.clear();
  publish_revision(request, entry);
  const double elapsed = seconds_since(started);
  const double average = static_cast<double>(total - verified_bytes) / std::max(elapsed, 1e-3);
  // The final progress is the whole model at the average speed, so a client's Total line
  // agrees with this sentence.
  narrator_.emit({kActor, "download_completed", id.str(),
                  fmt::format("Downloaded {}: {} file{}, {} in {:.1f} s ({}/s)", id.str(),
                              files.size(), files.size() == 1 ? "" : "s", format_bytes(total),
                              elapsed, format_bytes(static_cast<std::uint64_t>(average))),
                  request.job_id, Level::info, 0,
                  narration::Progress{"", 0, 0, average, std::nullopt, total, total, {}}});
}

}  // namespace rbee::provisioner

namespace rbee::provisioner {

// Whole revisions (DESIGN §16): every verified file of the commit is linked into
// snapshots/<commit>/ first, and only then is refs/<revision> replaced (temp file, rename, fsync
// of the folder): a reader that follows the ref sees this commit whole or the one before, never a
// mix. A revision asked for by its commit id gets no ref, as in huggingface_hub.
void ModelProvisioner::publish_revision(const DownloadRequest& request, ModelEntry entry) {
  const ModelId id = entry.id;  // a copy: the entry is moved into the catalog below
  const catalog::Directory model = *catalog_.open_model_dir(id, true);
  std::uint64_t size = 0;
  std::vector<ModelFile> linked;
  for (const auto& file : entry.files) {
    if (file.state != "verified") continue;
    catalog::link_snapshot_file(model, entry.commit, file.path, catalog::blob_name(file));
    size += file.size;
    linked.push_back(file);
  }
  const bool names_a_ref = request.revision != entry.commit;
  if (names_a_ref) {
    const catalog::Directory work = *model.descend(catalog::ModelCatalog::kWorkFolder, true);
    catalog::write_ref(model, request.revision, entry.commit, work);
    entry.refs[request.revision] = entry.commit;
  }
  auto& record = entry.revision_record(entry.commit);
  record.status = ModelStatus::ready;
  record.size = size;
  record.error.clear();
  record.files = std::move(linked);
  // The revision the hive's workers follow moved (or this is the first whole one): they load it.
  if (request.revision == entry.revision || entry.path.empty() ||
      !entry.refs.contains(entry.revision)) {
    entry.path = catalog_.snapshot_dir(id, entry.commit).string();
  }
  catalog_.put(std::move(entry));
  if (names_a_ref) prune_unnamed_revisions(request, id);
}

// --keep-revisions: once a ref moved, the revisions no ref names beyond the newest few go, with
// the blobs only they held. A worker that has their files open keeps reading them.
void ModelProvisioner::prune_unnamed_revisions(const DownloadRequest& request, const ModelId& id) {
  try {
    const auto removed = catalog::prune_revisions(catalog_, id, settings_.keep_unnamed_revisions);
    if (removed.commits.empty()) return;
    narrator_.emit(
        {kActor, "revisions_pruned", id.str(),
         fmt::format("Removed {} older revision{} of {} that no ref names ({} freed; "
                     "--keep-revisions {})",
                     removed.commits.size(), removed.commits.size() == 1 ? "" : "s", id.str(),
                     format_bytes(removed.bytes_freed), settings_.keep_unnamed_revisions),
         request.job_id, Level::info, 0, std::nullopt});
  } catch (const catalog::CatalogError& error) {
    // The download stands; the old revision stays until the next prune.
    narrator_.emit(
        {kActor, "revisions_prune_failed", id.str(),
         fmt::format("Could not remove older revisions of {}: {}", id.str(), error.what()),
         request.job_id, Level::warn, 0, std::nullopt});
  }
}

}  // namespace rbee::provisioner
