#pragma once
// HubMirror: the Hugging Face Hub's read API under /hf, answered from this hive's cache with
// pull-through from the hive's own upstream (DESIGN §13), so that HF_ENDPOINT=http://hive:7835/hf
// works for other hives and for the official Hub clients.
//
//   GET      /hf/api/models/{repo}[/revision/{rev}][?blobs=true]    model info
//   GET      /hf/api/models/{repo}/tree/{rev}[/{path}][?recursive=] the tree, paginated by Link
//   POST     /hf/api/models/{repo}/paths-info/{rev}                 {"paths":[…]} (JSON or form)
//   HEAD/GET /hf/{repo}/resolve/{rev}/{path}                        the file; one Range at most
//
// Listings come from the RepoSnapshot the provisioner keeps of the commit it downloaded; a file
// comes from the model folder once verified, or from LiveFiles while this hive downloads it (its
// committed prefix; the last byte only once the whole file verified, so a requester never holds
// a complete wrong file). What this hive lacks is pulled through as an ordinary model_download
// job that every requester shares. The hive's own guard (token, Host, limits) runs first.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <httplib.h>
#include <rbee/catalog/model_catalog.hpp>
#include <rbee/narration/narrator.hpp>
#include <rbee/provisioner/model_provisioner.hpp>

namespace rbee::mirror {

struct MirrorSettings {
  bool pull_through = true;  // --mirror-pull-through
  bool offline = false;      // --offline: the cache only, never the upstream
  // True when every request reaching the mirror carried the hive's API token (the hive checks
  // it before any route). Without one, gated and private models are not served at all.
  bool requests_authenticated = false;
  // How long a request waits for a pulled listing, or for a pulled file's first bytes.
  std::chrono::seconds pull_timeout{300};
  std::size_t tree_page_size = 1000;           // entries per page of the tree API
  std::size_t read_buffer_bytes = 128 * 1024;  // per response being sent
};

// Starts the mirror's model_download jobs; the hive, which owns jobs, implements it.
class PullThrough {
 public:
  enum class State { running, completed, failed };
  struct Status {
    State state = State::running;
    std::string error;       // when failed
    std::string error_code;  // the provisioner's error kind (repo_not_found, gated, network…)
  };
  virtual ~PullThrough() = default;
  struct Pull {
    std::string job_id;
    bool started = false;  // false: the job already running for the same pair
  };
  // A model_download of `model` ("org/name", or "org/name:path" for one file) at `revision`:
  // the job still running for the same pair, or a new one. Throws std::runtime_error when the
  // hive takes no more jobs.
  virtual Pull start(const std::string& model, const std::string& revision) = 0;
  virtual Status status(const std::string& job_id) const = 0;
};

struct MirrorStats {
  std::uint64_t bytes_served = 0;  // file bytes sent to requesters
  std::uint64_t files_served = 0;  // responses that reached the end of a file
  std::uint64_t pulls = 0;         // model_download jobs started for requesters (not joined)
  std::map<std::string, std::uint64_t> requests_by_route;
};

// "/hf/{repo}/resolve/{rev}/{path}" and the like for a path under /hf (metrics labels); empty
// for any other path.
std::string mirror_route_of(std::string_view path);

class HubMirror {
 public:
  HubMirror(const catalog::ModelCatalog& catalog, const provisioner::ModelProvisioner& provisioner,
            PullThrough& pull_through, const narration::Narrator& narrator,
            MirrorSettings settings);
  ~HubMirror();
  HubMirror(const HubMirror&) = delete;
  HubMirror& operator=(const HubMirror&) = delete;

  // Registers the /hf routes.
  void install(httplib::Server& server);
  // Requests waiting for a pull, and responses waiting for bytes, end now (the hive stops).
  void stop();
  MirrorStats stats() const;

  class Impl;  // the request handlers (hub_mirror.cpp)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace rbee::mirror
