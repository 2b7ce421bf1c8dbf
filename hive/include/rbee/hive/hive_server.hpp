#pragma once
// HiveServer: the hive's HTTP API (DESIGN §3) over cpp-httplib.

#include <atomic>
#include <memory>
#include <mutex>
#include <variant>

#include <httplib.h>
#include <rbee/catalog/model_catalog.hpp>
#include <rbee/jobs/job_registry.hpp>
#include <rbee/jobs/job_router.hpp>
#include <rbee/mirror/hub_mirror.hpp>
#include <rbee/narration/narrator.hpp>
#include <rbee/provisioner/model_provisioner.hpp>

#include "rbee/hive/config.hpp"
#include "rbee/hive/guarded_server.hpp"
#include "rbee/hive/metrics.hpp"
#include "rbee/hive/stream_tickets.hpp"

namespace rbee::hive {

// Lifecycle: bind() on the main thread, serve() on a thread of the caller's (it blocks until
// stop), shutdown() from any other thread. The registry, router, catalog, provisioner and
// narrator must outlive the server.
class HiveServer {
 public:
  HiveServer(const HiveConfig& config, jobs::JobRegistry& registry, jobs::JobRouter& router,
             catalog::ModelCatalog& catalog, const provisioner::ModelProvisioner& provisioner,
             const narration::Narrator& narrator);
  ~HiveServer();

  // Throws std::runtime_error when the address cannot be bound. Returns the bound port.
  int bind();
  // Accepts connections until shutdown(); returns false when listening failed.
  bool serve();
  // Graceful: refuses new jobs (503), cancels every job, lets their streams end with
  // [CANCELLED], then stops accepting and returns from serve(). Idempotent.
  void shutdown();

 private:
  class MirrorJobs;  // the mirror's pull-through, as jobs of this server
  // A refused submission: the HTTP status, the error code and the operator's sentence.
  struct Refusal {
    int status = 0;
    std::string code, message;
  };
  // Creates and starts a job unless the hive is draining or full.
  std::variant<std::shared_ptr<jobs::Job>, Refusal> submit(jobs::Operation operation);

  void install_routes();
  void install_instrumentation();
  void handle_submit(const httplib::Request& request, httplib::Response& response);
  void handle_stream(const httplib::Request& request, httplib::Response& response);
  void handle_cancel(const httplib::Request& request, httplib::Response& response);
  httplib::Server::HandlerResponse admit(const httplib::Request& request,
                                         httplib::Response& response);
  bool authorized(const httplib::Request& request) const;

  const HiveConfig& config_;
  jobs::JobRegistry& registry_;
  jobs::JobRouter& router_;
  catalog::ModelCatalog& catalog_;
  const provisioner::ModelProvisioner& provisioner_;
  const narration::Narrator& narrator_;
  GuardedServer server_;
  std::atomic<bool> stopping_{false};  // open streams end at their next slice

  std::mutex submit_mutex_;  // orders job submission against the start of shutdown
  bool draining_ = false;
  std::map<std::string, std::uint64_t> jobs_submitted_;  // by operation; under submit_mutex_
  HttpMetrics http_metrics_;
  StreamTickets stream_tickets_;
  std::once_flag shutdown_once_;
  std::atomic<int> open_streams_{0};
  std::unique_ptr<MirrorJobs> mirror_jobs_;
  std::unique_ptr<mirror::HubMirror> mirror_;
};

}  // namespace rbee::hive
