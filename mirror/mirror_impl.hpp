#pragma once
// HubMirror::Impl (internal): the mirror's one object, told in three files:
//   hub_mirror.cpp       the routes, who may pull, and the listing answers (model info, tree,
//                        paths-info) from the kept snapshots;
//   resolve_answers.cpp  a file's bytes: from disk, or from a download still growing, with ranges;
//   pull_through.cpp     what this hive lacks, pulled from upstream by a job (PullThrough), and
//                        the wait for it.

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <rbee/catalog/model_catalog.hpp>
#include <rbee/provisioner/live_files.hpp>
#include <rbee/provisioner/model_provisioner.hpp>
#include <rbee/provisioner/repo_snapshot.hpp>

#include "rbee/mirror/hub_mirror.hpp"
#include "repo_views.hpp"

namespace rbee::mirror {

using httplib::Request;
using httplib::Response;
using provisioner::LiveFile;
using provisioner::RepoSnapshot;
using provisioner::Sibling;
using MirrorClock = std::chrono::steady_clock;

// One "bytes=a-b" range, as RFC 9110 reads it against a file of `size` bytes.
struct ByteRange {
  std::uint64_t begin = 0, end = 0;  // [begin, end)
};
enum class RangeRequest { none, satisfiable, unsatisfiable };

// Where a response's bytes come from: the verified file, or the file still downloading.
struct FileSource {
  catalog::UniqueFd verified;               // the published file, when this hive has it
  std::shared_ptr<const LiveFile> growing;  // else the download in progress
  int fd() const { return verified ? verified.get() : growing->fd(); }
};

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

  void install(httplib::Server& server);

  void stop() { stopping_ = true; }

  MirrorStats stats() const;

 private:
  void count(const std::string& route);

  // The model id of the URL's first two captures; answers 404 RepoNotFound when it is not a
  // valid id (nothing could ever be stored under it).
  std::optional<catalog::ModelId> model_id(const Request& request, Response& response);

  // The snapshot of `id` at `revision`: from the cache, or pulled through by a model_download
  // of `pull_model` (the whole repo, or the one file asked for), whose job id is then left in
  // `pull_job`. Answers the error itself and returns null when there is none to be had.
  std::shared_ptr<const RepoSnapshot> find_repo(const Request& request, const catalog::ModelId& id,
                                                const std::string& revision,
                                                const std::string& pull_model, Response& response,
                                                std::string* pull_job = nullptr);

  bool start_pull(const std::string& model, const std::string& revision, std::string& job_id,
                  Response& response);

  // The pull of the whole model that is still running, if any: a file it will fetch needs no
  // pull of its own (which would only wait for the model's lock).
  std::optional<std::string> running_model_pull(const catalog::ModelId& id);

  // Sleeps one poll interval; false (and the answer given) when the hive stops or the wait for
  // the upstream has lasted too long.
  bool wait_a_moment(MirrorClock::time_point deadline, const std::string& wanted,
                     const std::string& job_id, Response& response) const;

  // A web page must not make a hive without a token download anything (DESIGN §12): a browser
  // marks its requests (Origin on CORS requests, Sec-Fetch-Site on all of them), Hub clients
  // do not. Such a request is served from the cache only.
  bool from_web_page(const Request& request) const;
  bool may_pull(const Request& request) const;
  std::string why_no_pull() const;

  // Gated and private models go only to requests that carried the hive's API token.
  bool allowed(const catalog::ModelId& id, const RepoSnapshot& snapshot, Response& response);

  void model_info(const Request& request, Response& response, const std::string& revision);

  void tree(const Request& request, Response& response);

  // One page of `entries`, with a Link to the next (the cursor is the index of its first entry).
  void send_page(const Request& request, Response& response, const catalog::ModelId& id,
                 const std::string& revision, const std::string& folder, bool recursive,
                 const std::vector<nlohmann::json>& entries);

  void paths_info(const Request& request, Response& response);

  void resolve(const Request& request, Response& response);

  static void set_partial(Response& response, const ByteRange& range, std::uint64_t size);

  // The verified file in the model folder, when the catalog says so and it has the listed size.
  catalog::UniqueFd open_verified(const catalog::ModelId& id, const RepoSnapshot& snapshot,
                                  const Sibling& sibling);

  void send_not_cached(Response& response, const catalog::ModelId& id, const Sibling& sibling);

  std::shared_ptr<const LiveFile> find_growing(const catalog::ModelId& id,
                                               const RepoSnapshot& snapshot,
                                               const Sibling& sibling) const;

  bool has_file(const catalog::ModelId& id, const RepoSnapshot& snapshot, const Sibling& sibling);

  // The file's bytes: on disk, growing, or pulled through now (shared with every requester of
  // the same file). Answers the error itself and returns nullopt when there are none.
  // `job_id`: the pull of this file already started, if any.
  std::optional<FileSource> open_source(const Request& request, const catalog::ModelId& id,
                                        const RepoSnapshot& snapshot, const Sibling& sibling,
                                        std::string job_id, Response& response);

  // Sends `range` of the file from `source` through a buffer of read_buffer_bytes (memory per
  // response is bounded, whatever the file's size). A growing file is sent as its committed
  // prefix grows; if its download is abandoned (a checksum mismatch, a failure) the response is
  // cut short, so the requester never completes a wrong file.
  void send_file(Response& response, FileSource source, const catalog::ModelId& id,
                 const Sibling& sibling, ByteRange range);

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

}  // namespace rbee::mirror
