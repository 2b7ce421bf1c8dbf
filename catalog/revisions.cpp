#include "rbee/catalog/revisions.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "rbee/catalog/repo_store.hpp"

namespace rbee::catalog {
namespace {

// After `commit` is gone: the entry describes the revision its followed ref names, else the
// newest ready one that is left.
void describe_remaining(const ModelCatalog& catalog, ModelEntry& entry) {
  const RevisionRecord* current = nullptr;
  if (const auto ref = entry.refs.find(entry.revision); ref != entry.refs.end()) {
    current = entry.find_revision(ref->second);
  }
  if (!current || current->status != ModelStatus::ready) {
    current = nullptr;
    for (const auto& revision : entry.revisions) {
      if (revision.status == ModelStatus::ready &&
          (!current || revision.added_at_ms > current->added_at_ms)) {
        current = &revision;
      }
    }
  }
  if (!current) return;
  entry.commit = current->commit;
  entry.files = current->files;
  entry.bytes_total = entry.bytes_done = current->size;
  entry.status = ModelStatus::ready;
  entry.error.clear();
  entry.path = catalog.snapshot_dir(entry.id, current->commit).string();
}

RemovedRevisions remove_commits(ModelCatalog& catalog, const ModelId& id,
                                const std::set<std::string>& commits, std::stop_token stop) {
  RemovedRevisions removed;
  if (commits.empty()) return removed;
  std::set<std::string> candidates;
  // First the record says deleting, so a crash part way never leaves it "ready".
  catalog.update(
      id,
      [&](ModelEntry& entry) {
        for (auto& revision : entry.revisions) {
          if (!commits.contains(revision.commit)) continue;
          revision.status = ModelStatus::deleting;
          for (const auto& file : revision.files) candidates.insert(blob_name(file));
        }
      },
      stop);
  const Directory model = *catalog.open_model_dir(id, false);
  ModelEntry entry = *catalog.get(id);
  for (auto ref = entry.refs.begin(); ref != entry.refs.end();) {
    if (commits.contains(ref->second)) {
      remove_ref(model, ref->first);
      ref = entry.refs.erase(ref);
    } else {
      ++ref;
    }
  }
  for (const auto& commit : commits) {
    remove_snapshot(model, commit);
    removed.commits.push_back(commit);
  }
  // Blobs the remaining revisions name stay even if their snapshots lack a link (a revision
  // whose download failed keeps its verified blobs for the next attempt).
  std::erase_if(entry.revisions,
                [&](const RevisionRecord& revision) { return commits.contains(revision.commit); });
  for (const auto& revision : entry.revisions) {
    for (const auto& file : revision.files) candidates.erase(blob_name(file));
  }
  if (!commits.contains(entry.commit)) {
    for (const auto& file : entry.files) candidates.erase(blob_name(file));
  }
  removed.bytes_freed = remove_blobs_unless_linked(model, candidates);
  catalog.update(
      id,
      [&](ModelEntry& current) {
        current.refs = entry.refs;
        current.revisions = entry.revisions;
        if (commits.contains(current.commit)) describe_remaining(catalog, current);
      },
      stop);
  return removed;
}

}  // namespace

std::optional<std::string> commit_of(const ModelEntry& entry, std::string_view revision) {
  if (const auto ref = entry.refs.find(std::string(revision)); ref != entry.refs.end()) {
    return ref->second;
  }
  if (entry.find_revision(revision)) return std::string(revision);
  return std::nullopt;
}

RemovedRevisions remove_revision(ModelCatalog& catalog, const ModelId& id,
                                 const std::string& commit, std::stop_token stop) {
  const auto entry = catalog.get(id);
  if (!entry || !entry->find_revision(commit)) {
    throw CatalogError(CatalogErrorCode::not_found,
                       fmt::format("model {} has no revision {}", id.str(), commit));
  }
  return remove_commits(catalog, id, {commit}, std::move(stop));
}

RemovedRevisions prune_revisions(ModelCatalog& catalog, const ModelId& id, std::size_t keep_unnamed,
                                 std::stop_token stop) {
  const auto entry = catalog.get(id);
  if (!entry) return {};
  std::set<std::string> named;
  for (const auto& [ref, commit] : entry->refs) named.insert(commit);
  named.insert(entry->commit);
  std::vector<const RevisionRecord*> unnamed;
  for (const auto& revision : entry->revisions) {
    if (!named.contains(revision.commit)) unnamed.push_back(&revision);
  }
  // Newest first; the first `keep_unnamed` ready ones stay.
  std::sort(unnamed.begin(), unnamed.end(),
            [](const auto* a, const auto* b) { return a->added_at_ms > b->added_at_ms; });
  std::set<std::string> commits;
  std::size_t kept = 0;
  for (const auto* revision : unnamed) {
    if (revision->status == ModelStatus::ready && kept < keep_unnamed) {
      ++kept;
      continue;
    }
    commits.insert(revision->commit);
  }
  return remove_commits(catalog, id, commits, std::move(stop));
}

}  // namespace rbee::catalog
