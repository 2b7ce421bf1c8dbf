#include "rbee/mirror/hub_mirror.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>
#include <rbee/provisioner/hub_client.hpp>

#include "hub_answers.hpp"
#include "repo_views.hpp"

namespace rbee::mirror {
namespace {

using httplib::Request;
using httplib::Response;
using provisioner::LiveFile;
using provisioner::RepoSnapshot;
using provisioner::Sibling;
using Clock = std::chrono::steady_clock;

constexpr const char* kActor = "mirror";
constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr auto kWaitSlice = std::chrono::milliseconds(250);
constexpr std::size_t kMaxPathsInfo = 1000;
constexpr std::size_t kMaxModelPulls = 1024;

// One "bytes=a-b" range, as RFC 9110 reads it against a file of `size` bytes.
struct ByteRange {
  std::uint64_t begin = 0, end = 0;  // [begin, end)
};
enum class RangeRequest { none, satisfiable, unsatisfiable };

// Several ranges, or a form this does not read, are answered with the whole file (200), as
// RFC 9110 allows; a single range past the end is 416.
RangeRequest parse_single_range(const std::string& header, std::uint64_t size, ByteRange& range) {
  if (header.empty() || !header.starts_with("bytes=") || header.find(',') != std::string::npos) {
    return RangeRequest::none;
  }
  const std::string spec = header.substr(6);
  const auto dash = spec.find('-');
  if (dash == std::string::npos) return RangeRequest::none;
  auto number = [](const std::string& text, std::uint64_t& value) {
    if (text.empty() || text.size() > 19 || !std::all_of(text.begin(), text.end(), ::isdigit))
      return false;
    value = std::stoull(text);
    return true;
  };
  std::uint64_t first = 0, last = 0;
  const std::string left = spec.substr(0, dash), right = spec.substr(dash + 1);
  if (left.empty()) {  // the last N bytes
    if (!number(right, last)) return RangeRequest::none;
    if (last == 0 || size == 0) return RangeRequest::unsatisfiable;
    range = {size - std::min(last, size), size};
    return RangeRequest::satisfiable;
  }
  if (!number(left, first)) return RangeRequest::none;
  if (!right.empty() && (!number(right, last) || last < first)) return RangeRequest::none;
  if (first >= size) return RangeRequest::unsatisfiable;
  range = {first, right.empty() ? size : std::min(last + 1, size)};
  return RangeRequest::satisfiable;
}

// Where a response's bytes come from: the verified file, or the file still downloading.
struct FileSource {
  catalog::UniqueFd verified;               // the published file, when this hive has it
  std::shared_ptr<const LiveFile> growing;  // else the download in progress
  int fd() const { return verified ? verified.get() : growing->fd(); }
};

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

class HubMirror::Impl {
 public:
  Impl(const catalog::ModelCatalog& catalog, const provisioner::ModelProvisioner& provisioner,
       PullThrough& pull_through, const narration::Narrator& narrator, MirrorSettings settings)
      : catalog_(catalog),
        provisioner_(provisioner),
        pull_through_(pull_through),
        narrator_(narrator),
        settings_(settings),
        repos_(catalog, provisioner.hub().settings().listing) {}

  void install(httplib::Server& server) {
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

  void stop() { stopping_ = true; }

  MirrorStats stats() const {
    std::lock_guard lock(stats_mutex_);
    MirrorStats stats = stats_;
    stats.bytes_served = bytes_served_.load();
    return stats;
  }

 private:
  void count(const std::string& route) {
    std::lock_guard lock(stats_mutex_);
    ++stats_.requests_by_route[route];
  }

  // The model id of the URL's first two captures; answers 404 RepoNotFound when it is not a
  // valid id (nothing could ever be stored under it).
  std::optional<catalog::ModelId> model_id(const Request& request, Response& response) {
    try {
      const std::string org = request.matches[1].str();
      return catalog::parse_model_id(org.empty() ? request.matches[2].str()
                                                 : org + "/" + request.matches[2].str());
    } catch (const catalog::CatalogError&) {
      send_hub_error(response, 404, "RepoNotFound", "Repository not found: not a valid model id");
      return std::nullopt;
    }
  }

  // The snapshot of `id` at `revision`: from the cache, or pulled through by a model_download
  // of `pull_model` (the whole repo, or the one file asked for), whose job id is then left in
  // `pull_job`. Answers the error itself and returns null when there is none to be had.
  std::shared_ptr<const RepoSnapshot> find_repo(const Request& request, const catalog::ModelId& id,
                                                const std::string& revision,
                                                const std::string& pull_model, Response& response,
                                                std::string* pull_job = nullptr) {
    // A revision is outside text that may become a job (and a catalog field): the same rules
    // as a model_download's.
    try {
      catalog::validate_revision(revision);
    } catch (const catalog::CatalogError& error) {
      send_hub_error(response, 404, "RevisionNotFound", error.what());
      return nullptr;
    }
    const auto deadline = Clock::now() + settings_.pull_timeout;
    std::string job_id;
    for (;;) {
      // The job's status first: a job that completed has written its snapshot before.
      std::optional<PullThrough::Status> status;
      if (!job_id.empty()) status = pull_through_.status(job_id);
      const RepoLookup found = repos_.find(id, revision);
      if (const auto* snapshot = std::get_if<std::shared_ptr<const RepoSnapshot>>(&found)) {
        if (pull_job) *pull_job = job_id;
        return *snapshot;
      }
      const RepoMiss miss = std::get<RepoMiss>(found);
      const std::string wanted = fmt::format("{}@{}", id.str(), revision);
      if (!may_pull(request)) {
        send_hub_error(
            response, 404, miss == RepoMiss::no_repo ? "RepoNotFound" : "RevisionNotFound",
            fmt::format("{} is not in this hive's cache, and {}", wanted, why_no_pull()));
        return nullptr;
      }
      if (status && status->state == PullThrough::State::failed) {
        send_pull_failure(
            response, status->error_code,
            fmt::format("pulling {} from upstream failed ({}): {}", wanted, job_id, status->error));
        return nullptr;
      }
      if (status && status->state == PullThrough::State::completed) {
        send_hub_error(response, 404, "RevisionNotFound",
                       fmt::format("{} was pulled ({}), but the upstream names another commit now",
                                   wanted, job_id));
        return nullptr;
      }
      if (job_id.empty() && !start_pull(pull_model, revision, job_id, response)) return nullptr;
      if (!wait_a_moment(deadline, wanted, job_id, response)) return nullptr;
    }
  }

  bool start_pull(const std::string& model, const std::string& revision, std::string& job_id,
                  Response& response) {
    PullThrough::Pull pull;
    try {
      pull = pull_through_.start(model, revision);
    } catch (const std::exception& error) {
      response.set_header("Retry-After", "5");
      send_hub_error(response, 503, "", fmt::format("cannot pull {}: {}", model, error.what()));
      return false;
    }
    job_id = pull.job_id;
    std::lock_guard lock(stats_mutex_);
    if (pull.started) ++stats_.pulls;
    if (model.find(':') == std::string::npos) {
      // Only a hint for files that arrive while their model is pulled: running pulls are
      // forgotten as they are found finished, and a flood of models clears it.
      if (model_pulls_.size() >= kMaxModelPulls) model_pulls_.clear();
      model_pulls_[model] = job_id;
    }
    return true;
  }

  // The pull of the whole model that is still running, if any: a file it will fetch needs no
  // pull of its own (which would only wait for the model's lock).
  std::optional<std::string> running_model_pull(const catalog::ModelId& id) {
    std::string job_id;
    {
      std::lock_guard lock(stats_mutex_);
      const auto found = model_pulls_.find(id.str());
      if (found == model_pulls_.end()) return std::nullopt;
      job_id = found->second;
    }
    if (pull_through_.status(job_id).state == PullThrough::State::running) return job_id;
    std::lock_guard lock(stats_mutex_);
    if (const auto found = model_pulls_.find(id.str());
        found != model_pulls_.end() && found->second == job_id) {
      model_pulls_.erase(found);
    }
    return std::nullopt;
  }

  // Sleeps one poll interval; false (and the answer given) when the hive stops or the wait for
  // the upstream has lasted too long.
  bool wait_a_moment(Clock::time_point deadline, const std::string& wanted,
                     const std::string& job_id, Response& response) const {
    if (stopping_) {
      send_hub_error(response, 503, "", "the hive is shutting down");
      return false;
    }
    if (Clock::now() >= deadline) {
      send_hub_error(response, 504, "",
                     fmt::format("{} is still being pulled from upstream ({}); ask again later",
                                 wanted, job_id));
      return false;
    }
    std::this_thread::sleep_for(kPollInterval);
    return true;
  }

  // A web page must not make a hive without a token download anything (DESIGN §12): a browser
  // marks its requests (Origin on CORS requests, Sec-Fetch-Site on all of them), Hub clients
  // do not. Such a request is served from the cache only.
  bool from_web_page(const Request& request) const {
    if (settings_.requests_authenticated) return false;
    const std::string site = request.get_header_value("Sec-Fetch-Site");
    return request.has_header("Origin") ||
           (!site.empty() && site != "none" && site != "same-origin");
  }
  bool may_pull(const Request& request) const {
    return settings_.pull_through && !settings_.offline && !from_web_page(request);
  }
  std::string why_no_pull() const {
    if (settings_.offline) return "the hive is offline (--offline): it never contacts its upstream";
    if (!settings_.pull_through) return "pull-through is off (--mirror-pull-through=false)";
    return "a web page may not make a hive without an API token download";
  }

  // Gated and private models go only to requests that carried the hive's API token.
  bool allowed(const catalog::ModelId& id, const RepoSnapshot& snapshot, Response& response) {
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

  void model_info(const Request& request, Response& response, const std::string& revision) {
    const auto id = model_id(request, response);
    if (!id) return;
    const auto snapshot = find_repo(request, *id, revision, id->str(), response);
    if (!snapshot || !allowed(*id, *snapshot, response)) return;
    send_json(response,
              model_info_json(id->str(), *snapshot, request.get_param_value("blobs") == "true"));
  }

  void tree(const Request& request, Response& response) {
    const auto id = model_id(request, response);
    if (!id) return;
    const auto split = split_revision(request.matches[3].str());
    if (!split) return send_hub_error(response, 404, "RevisionNotFound", "no revision given");
    const auto& [revision, folder] = *split;
    const auto snapshot = find_repo(request, *id, revision, id->str(), response);
    if (!snapshot || !allowed(*id, *snapshot, response)) return;

    const bool recursive = request.get_param_value("recursive") == "true" ||
                           request.get_param_value("recursive") == "1";
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
  void send_page(const Request& request, Response& response, const catalog::ModelId& id,
                 const std::string& revision, const std::string& folder, bool recursive,
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

  void paths_info(const Request& request, Response& response) {
    const auto id = model_id(request, response);
    if (!id) return;
    std::vector<std::string> paths;
    if (request.get_header_value("Content-Type").starts_with("application/json")) {
      const auto body = nlohmann::json::parse(request.body, nullptr, false);
      const auto found = body.is_object() ? body.find("paths") : body.end();
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
      } else if (!path.empty() &&
                 std::any_of(siblings.begin(), siblings.end(),
                             [&](const Sibling& s) { return s.path.starts_with(path + "/"); })) {
        answer.push_back(directory_entry_json(path));
      }
    }
    send_json(response, answer);
  }

  void resolve(const Request& request, Response& response) {
    const auto id = model_id(request, response);
    if (!id) return;
    const auto split = split_revision(request.matches[3].str());
    if (!split || split->second.empty()) {
      return send_hub_error(response, 404, "EntryNotFound", "no file path given");
    }
    const auto& [revision, path] = *split;
    try {
      catalog::validate_repo_path(path);
    } catch (const catalog::CatalogError&) {
      return send_hub_error(response, 404, "EntryNotFound", "not a valid path in a repo");
    }
    std::string pull_job;  // the pull of this very file, when the listing had to be pulled
    const auto snapshot =
        find_repo(request, *id, revision, id->str() + ":" + path, response, &pull_job);
    if (!snapshot || !allowed(*id, *snapshot, response)) return;
    const auto& siblings = snapshot->listing.siblings;
    const auto file = std::find_if(siblings.begin(), siblings.end(),
                                   [&](const Sibling& s) { return s.path == path; });
    if (file == siblings.end()) {
      return send_hub_error(response, 404, "EntryNotFound",
                            fmt::format("{} has no file '{}' at commit {}", id->str(),
                                        narration::sanitize(path, 300), snapshot->listing.commit));
    }
    const Sibling& sibling = *file;
    // The file's headers go only with an answer about the file (not with a 404 for it).
    const auto set_file_headers = [&] {
      response.set_header("X-Repo-Commit", snapshot->listing.commit);
      response.set_header("ETag", etag_of(sibling));
      response.set_header("X-Linked-Etag", etag_of(sibling));
      response.set_header("X-Linked-Size", std::to_string(sibling.size));
      response.set_header("Accept-Ranges", "bytes");
    };

    ByteRange range{0, sibling.size};
    const auto wanted = parse_single_range(request.get_header_value("Range"), sibling.size, range);
    if (wanted == RangeRequest::unsatisfiable) {
      set_file_headers();
      response.set_header("Content-Range", fmt::format("bytes */{}", sibling.size));
      return send_hub_error(response, 416, "", "Requested range not satisfiable");
    }
    if (request.method == "HEAD") {
      // The header fields only, and the answer a GET would get: a file this hive lacks is 404
      // when it may not pull it, else it is pulled now, so the GET that follows finds it under
      // way. (Clients decide on HEAD: a 200 for a file that GET refuses breaks them.)
      if (!has_file(*id, *snapshot, sibling)) {
        if (!may_pull(request)) return send_not_cached(response, *id, sibling);
        if (pull_job.empty() && !running_model_pull(*id)) {
          std::string job_id;
          Response ignored;
          start_pull(id->str() + ":" + path, snapshot->listing.commit, job_id, ignored);
        }
      }
      set_file_headers();
      if (wanted == RangeRequest::satisfiable) set_partial(response, range, sibling.size);
      response.set_content_provider(range.end - range.begin, "application/octet-stream",
                                    [](std::size_t, std::size_t, httplib::DataSink&) {
                                      return false;  // never called for HEAD
                                    });
      return;
    }
    auto source = open_source(request, *id, *snapshot, sibling, pull_job, response);
    if (!source) return;
    set_file_headers();
    if (wanted == RangeRequest::satisfiable) set_partial(response, range, sibling.size);
    send_file(response, std::move(*source), *id, sibling, range);
  }

  static void set_partial(Response& response, const ByteRange& range, std::uint64_t size) {
    response.status = 206;
    response.set_header("Content-Range",
                        fmt::format("bytes {}-{}/{}", range.begin, range.end - 1, size));
  }

  // The verified file in the model folder, when the catalog says so and it has the listed size.
  catalog::UniqueFd open_verified(const catalog::ModelId& id, const RepoSnapshot& snapshot,
                                  const Sibling& sibling) {
    try {
      const auto verified = repos_.verified_files(id);
      if (!verified || verified->commit != snapshot.listing.commit) return {};
      const auto file = verified->sizes.find(sibling.path);
      if (file == verified->sizes.end() || file->second != sibling.size) return {};
      auto folder = catalog_.open_model_dir(id, false);
      const auto slash = sibling.path.rfind('/');
      if (folder && slash != std::string::npos) {
        folder = folder->descend(sibling.path.substr(0, slash), false);
      }
      if (!folder) return {};
      auto fd = folder->open_file(
          slash == std::string::npos ? sibling.path : sibling.path.substr(slash + 1), O_RDONLY);
      struct stat info {};
      if (!fd || ::fstat(fd.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
          static_cast<std::uint64_t>(info.st_size) != sibling.size) {
        return {};
      }
      return fd;
    } catch (const std::exception&) {
      return {};  // a symlink on the way, an unreadable entry: not a file to serve
    }
  }

  void send_not_cached(Response& response, const catalog::ModelId& id, const Sibling& sibling) {
    send_hub_error(response, 404, "EntryNotFound",
                   fmt::format("{}/{} is listed but not in this hive's cache, and {}", id.str(),
                               sibling.path, why_no_pull()));
  }

  std::shared_ptr<const LiveFile> find_growing(const catalog::ModelId& id,
                                               const RepoSnapshot& snapshot,
                                               const Sibling& sibling) const {
    auto live = provisioner_.live_files().find({id.str(), snapshot.listing.commit, sibling.path});
    if (live &&
        (live->size() != sibling.size || live->progress().state == LiveFile::State::abandoned)) {
      return nullptr;
    }
    return live;
  }

  bool has_file(const catalog::ModelId& id, const RepoSnapshot& snapshot, const Sibling& sibling) {
    return find_growing(id, snapshot, sibling) || open_verified(id, snapshot, sibling);
  }

  // The file's bytes: on disk, growing, or pulled through now (shared with every requester of
  // the same file). Answers the error itself and returns nullopt when there are none.
  // `job_id`: the pull of this file already started, if any.
  std::optional<FileSource> open_source(const Request& request, const catalog::ModelId& id,
                                        const RepoSnapshot& snapshot, const Sibling& sibling,
                                        std::string job_id, Response& response) {
    const auto deadline = Clock::now() + settings_.pull_timeout;
    const std::string wanted = fmt::format("{}/{}", id.str(), sibling.path);
    bool own_pull = !job_id.empty();  // else the whole model's pull, which this file is part of
    for (;;) {
      std::optional<PullThrough::Status> status;
      if (!job_id.empty()) status = pull_through_.status(job_id);
      if (status && !own_pull && status->state != PullThrough::State::running) {
        job_id.clear();  // the model's pull ended without this file: pull it alone
        status.reset();
      }
      if (auto growing = find_growing(id, snapshot, sibling)) return FileSource{{}, growing};
      if (auto verified = open_verified(id, snapshot, sibling)) {
        return FileSource{std::move(verified), nullptr};
      }
      if (!may_pull(request)) {
        send_not_cached(response, id, sibling);
        return std::nullopt;
      }
      if (status && status->state == PullThrough::State::failed) {
        send_pull_failure(
            response, status->error_code,
            fmt::format("pulling {} from upstream failed ({}): {}", wanted, job_id, status->error));
        return std::nullopt;
      }
      if (status && status->state == PullThrough::State::completed) {
        send_hub_error(response, 502, "",
                       fmt::format("{} was pulled ({}) but is not in the cache (deleted since?)",
                                   wanted, job_id));
        return std::nullopt;
      }
      if (job_id.empty()) {
        if (auto model_pull = running_model_pull(id)) {
          job_id = *model_pull;
        } else if (start_pull(id.str() + ":" + sibling.path, snapshot.listing.commit, job_id,
                              response)) {
          own_pull = true;
        } else {
          return std::nullopt;
        }
      }
      if (!wait_a_moment(deadline, wanted, job_id, response)) return std::nullopt;
    }
  }

  // Sends `range` of the file from `source` through a buffer of read_buffer_bytes (memory per
  // response is bounded, whatever the file's size). A growing file is sent as its committed
  // prefix grows; if its download is abandoned (a checksum mismatch, a failure) the response is
  // cut short, so the requester never completes a wrong file.
  void send_file(Response& response, FileSource source, const catalog::ModelId& id,
                 const Sibling& sibling, ByteRange range) {
    struct Transfer {
      FileSource source;
      std::vector<char> buffer;
      bool reached_end = false;
    };
    auto transfer = std::make_shared<Transfer>(Transfer{std::move(source), {}, false});
    const std::uint64_t begin = range.begin;
    const std::uint64_t end = range.end;
    response.set_content_provider(
        end - begin, "application/octet-stream",
        [this, transfer, begin, end](std::size_t offset, std::size_t, httplib::DataSink& sink) {
          const std::uint64_t at = begin + offset;
          std::uint64_t readable = end;
          if (transfer->source.growing) {
            const auto progress = transfer->source.growing->wait_readable(at, kWaitSlice);
            if (progress.state == LiveFile::State::abandoned || stopping_) return false;
            readable = std::min(end, progress.readable);
            if (readable <= at) return true;  // called again: waits once more
          }
          if (transfer->buffer.empty()) {
            transfer->buffer.resize(
                std::min<std::uint64_t>(settings_.read_buffer_bytes, end - begin));
          }
          const std::size_t want = std::min<std::uint64_t>(transfer->buffer.size(), readable - at);
          ssize_t n = -1;
          do {
            n = ::pread(transfer->source.fd(), transfer->buffer.data(), want,
                        static_cast<off_t>(at));
          } while (n < 0 && errno == EINTR);
          if (n <= 0) return false;  // the file shrank or cannot be read: cut the response
          if (!sink.write(transfer->buffer.data(), static_cast<std::size_t>(n))) return false;
          bytes_served_ += static_cast<std::uint64_t>(n);
          if (at + static_cast<std::uint64_t>(n) == end) transfer->reached_end = true;
          return true;
        },
        [this, transfer, id, path = sibling.path, size = sibling.size, end](bool success) {
          if (!success || !transfer->reached_end || end != size) return;
          {
            std::lock_guard lock(stats_mutex_);
            ++stats_.files_served;
          }
          narrator_.emit({kActor, "mirror_file_served", id.str(),
                          fmt::format("Sent the end of {}/{} ({} bytes) to a peer; {} bytes served "
                                      "in all",
                                      id.str(), path, size, bytes_served_.load()),
                          "", narration::Level::info, 0, std::nullopt});
        });
  }

  const catalog::ModelCatalog& catalog_;
  const provisioner::ModelProvisioner& provisioner_;
  PullThrough& pull_through_;
  const narration::Narrator& narrator_;
  const MirrorSettings settings_;
  RepoViews repos_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> bytes_served_{0};
  mutable std::mutex stats_mutex_;  // guards what follows
  MirrorStats stats_;
  std::map<std::string, std::string> model_pulls_;  // model id → its last whole-model pull
};

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
