#include "rbee/mirror/hub_mirror.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>
#include <rbee/provisioner/hub_client.hpp>

#include "hub_answers.hpp"
#include "mirror_impl.hpp"

namespace rbee::mirror {
namespace {

constexpr std::size_t kMaxPathsInfo = 1000;

std::string base_url(const Request& request) {
  const std::string proto = request.get_header_value("X-Forwarded-Proto");
  return fmt::format("{}://{}", proto == "https" ? "https" : "http",
                     request.get_header_value("Host"));
}

}  // namespace

std::string mirror_route_of(std::string_view path) {
  static constexpr std::string_view kPrefix = "/hf/", kApi = "/hf/api/models/";
  if (!path.starts_with(kPrefix)) return "";
  if (path.starts_with(kApi)) {
    for (std::string_view part : {"/revision/", "/tree/", "/paths-info/"}) {
      if (path.find(part) != std::string_view::npos) {
        return fmt::format("/hf/api/models/{{repo}}{}{{rev}}", part);
      }
    }
    return "/hf/api/models/{repo}";
  }
  if (path.find("/resolve/") != std::string_view::npos) return "/hf/{repo}/resolve/{rev}/{path}";
  return "/hf/other";
}

void HubMirror::Impl::install(httplib::Server& server) {
  // Every route twice: for "org/name", then for a canonical id without an owner ("gpt2"),
  // whose empty first group keeps the captures' numbers (model_id() reads them). The
  // two-part form goes first: "/hf/api/models/a/b" is the repo a/b, as on the Hub.
  for (const char* repo : {"([^/]+)/([^/]+)", "()([^/]+)"}) {
    server.Get(fmt::format("/hf/api/models/{}", repo), [this](const Request& rq, Response& rs) {
      count("/hf/api/models/{repo}");
      model_info(rq, rs, "main");
    });
    server.Get(fmt::format("/hf/api/models/{}/revision/(.+)", repo),
               [this](const Request& rq, Response& rs) {
                 count("/hf/api/models/{repo}/revision/{rev}");
                 model_info(rq, rs, rq.matches[3].str());
               });
    server.Get(fmt::format("/hf/api/models/{}/tree/(.+)", repo),
               [this](const Request& rq, Response& rs) {
                 count("/hf/api/models/{repo}/tree/{rev}");
                 tree(rq, rs);
               });
    server.Post(fmt::format("/hf/api/models/{}/paths-info/(.+)", repo),
                [this](const Request& rq, Response& rs) {
                  count("/hf/api/models/{repo}/paths-info/{rev}");
                  paths_info(rq, rs);
                });
    // cpp-httplib routes HEAD to the GET handlers.
    server.Get(fmt::format("/hf/{}/resolve/(.+)", repo), [this](const Request& rq, Response& rs) {
      count("/hf/{repo}/resolve/{rev}/{path}");
      resolve(rq, rs);
    });
  }
}

MirrorStats HubMirror::Impl::stats() const {
  std::lock_guard lock(stats_mutex_);
  MirrorStats stats = stats_;
  stats.bytes_served = bytes_served_.load();
  return stats;
}

void HubMirror::Impl::count(const std::string& route) {
  std::lock_guard lock(stats_mutex_);
  ++stats_.requests_by_route[route];
}

// The model id of the URL's first two captures; answers 404 RepoNotFound when it is not a
// valid id (nothing could ever be stored under it).
std::optional<catalog::ModelId> HubMirror::Impl::model_id(const Request& request,
                                                          Response& response) {
  try {
    const std::string org = request.matches[1].str();
    return catalog::parse_model_id(org.empty() ? request.matches[2].str()
                                               : org + "/" + request.matches[2].str());
  } catch (const catalog::CatalogError&) {
    send_hub_error(response, 404, "RepoNotFound", "Repository not found: not a valid model id");
    return std::nullopt;
  }
}

// A web page must not make a hive without a token download anything (DESIGN §12): a browser
// marks its requests (Origin on CORS requests, Sec-Fetch-Site on all of them), Hub clients
// do not. Such a request is served from the cache only.
bool HubMirror::Impl::from_web_page(const Request& request) const {
  if (settings_.requests_authenticated) return false;
  const std::string site = request.get_header_value("Sec-Fetch-Site");
  return request.has_header("Origin") || (!site.empty() && site != "none" && site != "same-origin");
}

bool HubMirror::Impl::may_pull(const Request& request) const {
  return settings_.pull_through && !settings_.offline && !from_web_page(request);
}

std::string HubMirror::Impl::why_no_pull() const {
  if (settings_.offline) return "the hive is offline (--offline): it never contacts its upstream";
  if (!settings_.pull_through) return "pull-through is off (--mirror-pull-through=false)";
  return "a web page may not make a hive without an API token download";
}

// Gated and private models go only to requests that carried the hive's API token.
bool HubMirror::Impl::allowed(const catalog::ModelId& id, const RepoSnapshot& snapshot,
                              Response& response) {
  if (settings_.requests_authenticated) return true;
  if (snapshot.listing.gated) {
    send_hub_error(response, 401, "GatedRepo",
                   fmt::format("{} is gated: this hive serves gated and private models only to "
                               "requests with its API token (start it with --api-token)",
                               id.str()));
    return false;
  }
  if (snapshot.listing.private_repo) {
    send_hub_error(response, 401, "RepoNotFound",
                   "Repository not found (private models are served only with the hive's API "
                   "token)");
    return false;
  }
  return true;
}

void HubMirror::Impl::model_info(const Request& request, Response& response,
                                 const std::string& revision) {
  const auto id = model_id(request, response);
  if (!id) return;
  const auto snapshot = find_repo(request, *id, revision, id->str(), response);
  if (!snapshot || !allowed(*id, *snapshot, response)) return;
  send_json(response,
            model_info_json(id->str(), *snapshot, request.get_param_value("blobs") == "true"));
}

void HubMirror::Impl::tree(const Request& request, Response& response) {
  const auto id = model_id(request, response);
  if (!id) return;
  const auto split = split_revision(request.matches[3].str());
  if (!split) return send_hub_error(response, 404, "RevisionNotFound", "no revision given");
  const std::string& revision = split->first;
  const std::string& folder = split->second;
  const auto snapshot = find_repo(request, *id, revision, id->str(), response);
  if (!snapshot || !allowed(*id, *snapshot, response)) return;

  const bool recursive =
      request.get_param_value("recursive") == "true" || request.get_param_value("recursive") == "1";
  const std::string prefix = folder.empty() ? "" : folder + "/";
  std::vector<const Sibling*> files;
  for (const auto& sibling : snapshot->listing.siblings) {
    if (sibling.path.starts_with(prefix)) files.push_back(&sibling);
  }
  if (files.empty() && !folder.empty()) {
    return send_hub_error(response, 404, "EntryNotFound",
                          fmt::format("{} has no folder '{}'", id->str(), folder));
  }
  std::sort(files.begin(), files.end(),
            [](const Sibling* a, const Sibling* b) { return a->path < b->path; });
  // A recursive listing names every file; a flat one the files here and the folders below.
  std::vector<nlohmann::json> entries;
  std::string last_folder;
  for (const Sibling* file : files) {
    const std::string_view rest = std::string_view(file->path).substr(prefix.size());
    const auto slash = rest.find('/');
    if (recursive || slash == std::string_view::npos) {
      entries.push_back(file_entry_json(*file));
    } else if (const std::string sub = prefix + std::string(rest.substr(0, slash));
               sub != last_folder) {
      entries.push_back(directory_entry_json(sub));
      last_folder = sub;
    }
  }
  send_page(request, response, *id, revision, folder, recursive, entries);
}

// One page of `entries`, with a Link to the next (the cursor is the index of its first entry).
void HubMirror::Impl::send_page(const Request& request, Response& response,
                                const catalog::ModelId& id, const std::string& revision,
                                const std::string& folder, bool recursive,
                                const std::vector<nlohmann::json>& entries) {
  std::size_t limit = settings_.tree_page_size;
  if (const auto text = request.get_param_value("limit"); !text.empty()) {
    if (text.size() > 6 || !std::all_of(text.begin(), text.end(), ::isdigit) ||
        std::stoul(text) == 0) {
      return send_hub_error(response, 400, "", "limit must be a positive integer");
    }
    limit = std::min<std::size_t>(limit, std::stoul(text));
  }
  std::size_t cursor = 0;
  if (const auto text = request.get_param_value("cursor"); !text.empty()) {
    if (text.size() > 12 || !std::all_of(text.begin(), text.end(), ::isdigit) ||
        std::stoull(text) > entries.size()) {
      return send_hub_error(response, 400, "", "invalid cursor");
    }
    cursor = std::stoull(text);
  }
  const std::size_t end = std::min(entries.size(), cursor + limit);
  nlohmann::json page = nlohmann::json::array();
  for (std::size_t i = cursor; i < end; ++i) page.push_back(entries[i]);
  if (end < entries.size()) {
    const std::string below = folder.empty()
                                  ? std::string()
                                  : fmt::format("/{}", provisioner::percent_encode(folder, true));
    const std::string url =
        fmt::format("{}/hf/api/models/{}/tree/{}{}?recursive={}&limit={}&cursor={}",
                    base_url(request), id.str(), provisioner::percent_encode(revision, false),
                    below, recursive ? "true" : "false", limit, end);
    response.set_header("Link", fmt::format("<{}>; rel=\"next\"", url));
  }
  send_json(response, page);
}

void HubMirror::Impl::paths_info(const Request& request, Response& response) {
  const auto id = model_id(request, response);
  if (!id) return;
  std::vector<std::string> paths;
  bool expand = request.get_param_value("expand") == "true";
  if (request.get_header_value("Content-Type").starts_with("application/json")) {
    const auto body = nlohmann::json::parse(request.body, nullptr, false);
    const auto found = body.is_object() ? body.find("paths") : body.end();
    if (body.is_object() && body.contains("expand")) expand = body["expand"] == true;
    if (body.is_object() && found != body.end() && found->is_array()) {
      for (const auto& path : *found) {
        if (path.is_string()) paths.push_back(path.get<std::string>());
      }
    } else if (body.is_object() && found != body.end() && found->is_string()) {
      paths.push_back(found->get<std::string>());
    } else {
      return send_hub_error(response, 400, "", "send {\"paths\": [...]}");
    }
  } else {
    // huggingface_hub sends a form: paths=a&paths=b
    for (std::size_t i = 0; i < request.get_param_value_count("paths"); ++i)
      paths.push_back(request.get_param_value("paths", i));
  }
  if (paths.size() > kMaxPathsInfo) {
    return send_hub_error(response, 400, "",
                          fmt::format("at most {} paths per request", kMaxPathsInfo));
  }
  const auto snapshot = find_repo(request, *id, request.matches[3].str(), id->str(), response);
  if (!snapshot || !allowed(*id, *snapshot, response)) return;
  nlohmann::json answer = nlohmann::json::array();
  for (std::string path : paths) {
    while (path.ends_with('/')) path.pop_back();
    const auto& siblings = snapshot->listing.siblings;
    const auto file = std::find_if(siblings.begin(), siblings.end(),
                                   [&](const Sibling& s) { return s.path == path; });
    if (file != siblings.end()) {
      answer.push_back(file_entry_json(*file));
      // With expand, the Hub names the last commit that touched the file; the mirror keeps no
      // history and names the revision's commit. The JS client keys its snapshot folder on it
      // (downloadFileToCacheDir), so a pointer lands beside the hive's own.
      if (expand) answer.back()["lastCommit"] = {{"id", snapshot->listing.commit}};
    } else if (!path.empty() &&
               std::any_of(siblings.begin(), siblings.end(),
                           [&](const Sibling& s) { return s.path.starts_with(path + "/"); })) {
      answer.push_back(directory_entry_json(path));
    }
  }
  send_json(response, answer);
}

HubMirror::HubMirror(const catalog::ModelCatalog& catalog,
                     const provisioner::ModelProvisioner& provisioner, PullThrough& pull_through,
                     const narration::Narrator& narrator, MirrorSettings settings)
    : impl_(std::make_unique<Impl>(catalog, provisioner, pull_through, narrator, settings)) {}

HubMirror::~HubMirror() = default;

void HubMirror::install(httplib::Server& server) {
  impl_->install(server);
}

void HubMirror::stop() {
  impl_->stop();
}

MirrorStats HubMirror::stats() const {
  return impl_->stats();
}

}  // namespace rbee::mirror
