#include "rbee/provisioner/repo_snapshot.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <rbee/catalog/repo_store.hpp>

#include "rbee/provisioner/hub_client.hpp"

namespace rbee::provisioner {
namespace {

constexpr const char* kWorkFolder = ".rbee";  // the hive's working names (staging.hpp)
constexpr const char* kSnapshotName = "listing.json";
// One listing per commit the model has held, so the mirror answers for every revision it
// keeps side by side (DESIGN §16), not only the newest.
constexpr const char* kListingsFolder = ".rbee/listings";
constexpr std::size_t kMaxRevisions = 64;  // the oldest names drop out first

}  // namespace

std::string snapshot_json(const RepoSnapshot& snapshot) {
  nlohmann::json siblings = nlohmann::json::array();
  for (const auto& sibling : snapshot.listing.siblings) {
    nlohmann::json entry = {{"rfilename", sibling.path}, {"size", sibling.size}};
    if (!sibling.blob_id.empty()) entry["blobId"] = sibling.blob_id;
    if (!sibling.lfs_sha256.empty()) {
      entry["lfs"] = {{"sha256", sibling.lfs_sha256}, {"size", sibling.size}};
    }
    siblings.push_back(std::move(entry));
  }
  const nlohmann::json document = {
      {"sha", snapshot.listing.commit},
      {"gated", snapshot.listing.gated ? nlohmann::json("auto") : nlohmann::json(false)},
      {"private", snapshot.listing.private_repo},
      {"rbee_revisions", snapshot.revisions},
      {"siblings", std::move(siblings)}};
  return document.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<RepoSnapshot> record_repo_snapshot(const catalog::Directory& model,
                                                 const RepoInfo& listing,
                                                 const std::string& revision,
                                                 const ListingLimits& limits) {
  RepoSnapshot snapshot{listing, {}};
  auto previous = load_repo_snapshot(model, limits);
  if (previous && previous->listing.commit == listing.commit) {
    snapshot.revisions = previous->revisions;
  }
  std::erase(snapshot.revisions, revision);
  snapshot.revisions.push_back(revision);
  if (snapshot.revisions.size() > kMaxRevisions) {
    snapshot.revisions.erase(snapshot.revisions.begin());
  }
  write_repo_snapshot(model, snapshot);
  return previous;
}

void write_repo_snapshot(const catalog::Directory& model, const RepoSnapshot& snapshot) {
  const auto work = model.descend(kWorkFolder, true);
  const std::string json = snapshot_json(snapshot);
  work->replace_file(kSnapshotName, json, *work);
  if (catalog::is_commit_id(snapshot.listing.commit)) {
    model.descend(kListingsFolder, true)
        ->replace_file(snapshot.listing.commit + ".json", json, *work);
  }
}

std::optional<RepoSnapshot> load_repo_snapshot(const catalog::Directory& model,
                                               const ListingLimits& limits,
                                               const std::string& commit) {
  try {
    if (!commit.empty() && !catalog::is_commit_id(commit)) return std::nullopt;
    const auto work = model.descend(commit.empty() ? kWorkFolder : kListingsFolder, false);
    if (!work) return std::nullopt;
    const auto text = work->read_file(
        commit.empty() ? std::string(kSnapshotName) : commit + ".json", limits.max_bytes);
    if (!text) return std::nullopt;
    RepoInfo listing = parse_listing(*text, limits);
    if (listing.commit.empty() || (!commit.empty() && listing.commit != commit)) {
      return std::nullopt;
    }
    auto revisions = std::move(listing.revisions);
    return RepoSnapshot{std::move(listing), std::move(revisions)};
  } catch (const std::exception&) {
    return std::nullopt;  // unreadable or not ours: as if there were none (a pull lists again)
  }
}

}  // namespace rbee::provisioner
