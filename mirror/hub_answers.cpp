#include "hub_answers.hpp"

#include <rbee/narration/event.hpp>
#include <rbee/narration/sanitize.hpp>

namespace rbee::mirror {

void send_json(httplib::Response& response, const nlohmann::json& body) {
  response.set_content(narration::dump_json(body), "application/json");
}

void send_hub_error(httplib::Response& response, int status, std::string_view error_code,
                    std::string_view message) {
  const std::string clean = narration::sanitize(message, 1000);
  response.status = status;
  if (!error_code.empty()) response.set_header("X-Error-Code", std::string(error_code));
  response.set_header("X-Error-Message", clean);
  send_json(response, {{"error", clean}});
}

void send_pull_failure(httplib::Response& response, const std::string& kind,
                       const std::string& message) {
  struct Answer {
    std::string_view kind;
    int status;
    std::string_view hub_code;
  };
  // The upstream's own answer where the Hub has one; a gateway error where the upstream failed.
  static constexpr Answer kAnswers[] = {
      {"repo_not_found", 404, "RepoNotFound"},
      {"revision_not_found", 404, "RevisionNotFound"},
      {"revision_conflict", 404, "RevisionNotFound"},  // this hive serves its own revision only
      {"entry_not_found", 404, "EntryNotFound"},
      {"gated_repo", 403, "GatedRepo"},
      {"unauthorized", 401, ""},
      {"forbidden", 403, ""},
      {"not_in_cache", 404, ""},
      {"rate_limited", 429, ""},
      {"not_enough_disk", 507, ""},
  };
  for (const auto& answer : kAnswers) {
    if (answer.kind == kind) {
      if (answer.status == 429) response.set_header("Retry-After", "5");
      return send_hub_error(response, answer.status, answer.hub_code, message);
    }
  }
  send_hub_error(response, 502, "", message);
}

nlohmann::json model_info_json(const std::string& repo, const provisioner::RepoSnapshot& snapshot,
                               bool blobs) {
  const auto& listing = snapshot.listing;
  nlohmann::json siblings = nlohmann::json::array();
  for (const auto& sibling : listing.siblings) {
    nlohmann::json entry = {{"rfilename", sibling.path}};
    if (blobs) {
      entry["size"] = sibling.size;
      if (!sibling.blob_id.empty()) entry["blobId"] = sibling.blob_id;
      if (!sibling.lfs_sha256.empty()) {
        entry["lfs"] = {{"sha256", sibling.lfs_sha256}, {"size", sibling.size}};
      }
    }
    siblings.push_back(std::move(entry));
  }
  return {{"_id", repo},
          {"id", repo},
          {"modelId", repo},
          {"sha", listing.commit},
          {"private", listing.private_repo},
          {"gated", listing.gated ? nlohmann::json("auto") : nlohmann::json(false)},
          {"disabled", false},
          {"siblings", std::move(siblings)}};
}

nlohmann::json file_entry_json(const provisioner::Sibling& sibling) {
  // "oid" is the git blob id (of the LFS pointer, for an LFS file), as on the Hub; a listing
  // without one leaves the content's sha256 as the only id there is.
  nlohmann::json entry = {{"type", "file"},
                          {"oid", sibling.blob_id.empty() ? sibling.lfs_sha256 : sibling.blob_id},
                          {"size", sibling.size},
                          {"path", sibling.path}};
  if (!sibling.lfs_sha256.empty()) {
    entry["lfs"] = {{"oid", sibling.lfs_sha256}, {"size", sibling.size}};
  }
  return entry;
}

nlohmann::json directory_entry_json(const std::string& path) {
  return {{"type", "directory"}, {"path", path}};
}

std::optional<std::pair<std::string, std::string>> split_revision(std::string_view rest) {
  std::size_t segments = 1;
  if (rest.starts_with("refs/pr/") || rest.starts_with("refs/convert/")) segments = 3;
  std::size_t end = 0;
  for (std::size_t i = 0; i < segments; ++i) {
    const std::size_t slash = rest.find('/', end);
    if (slash == std::string_view::npos) {
      if (i + 1 < segments) return std::nullopt;
      end = rest.size();
      break;
    }
    end = i + 1 < segments ? slash + 1 : slash;
  }
  std::string revision(rest.substr(0, end));
  if (revision.empty()) return std::nullopt;
  std::string path(end < rest.size() ? rest.substr(end + 1) : std::string_view());
  return std::make_pair(std::move(revision), std::move(path));
}

std::string etag_of(const provisioner::Sibling& sibling) {
  return "\"" + (sibling.lfs_sha256.empty() ? sibling.blob_id : sibling.lfs_sha256) + "\"";
}

}  // namespace rbee::mirror
