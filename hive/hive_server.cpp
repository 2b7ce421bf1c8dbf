#include "rbee/hive/hive_server.hpp"

#include <openssl/crypto.h>

#include <regex>
#include <thread>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>

#include "rbee/hive/api_json.hpp"
#include "rbee/hive/dashboard.hpp"
#include "rbee/hive/model_operations.hpp"
#include "rbee/hive/request_checks.hpp"
#include "rbee/hive/stream_profiles.hpp"

namespace rbee::hive {
namespace {

using httplib::Request;
using httplib::Response;

constexpr auto kStreamDrainTimeout = std::chrono::seconds(3);
constexpr auto kStreamWaitSlice = std::chrono::milliseconds(250);
constexpr int kRetryAfterSeconds = 5;

void send_json(Response& response, int status, const nlohmann::json& body) {
  response.status = status;
  response.set_content(narration::dump_json(body), "application/json");
}

void send_error(Response& response, int status, std::string_view code, std::string_view message) {
  send_json(response, status, error_body(code, message));
}

// The methods each path answers (those of install_routes() and the mirror's), for the 405 a
// known path gets for another method; cpp-httplib itself says 404 "no route" for both.
std::optional<std::string_view> allowed_methods(const std::string& path) {
  struct Route {
    std::regex pattern;
    std::string_view methods;
  };
  static const std::vector<Route> kRoutes = [] {
    std::vector<Route> routes;
    for (const auto& [pattern, methods] :
         std::initializer_list<std::pair<const char*, const char*>>{
             {"/|/health|/metrics|/v1/models|/v1/models/.+", "GET, HEAD"},
             {"/v1/jobs", "GET, HEAD, POST"},
             {"/v1/jobs/[^/]+/stream-ticket", "POST"},
             {"/v1/jobs/[^/]+/stream", "GET, HEAD"},
             {"/v1/jobs/[^/]+", "GET, HEAD, DELETE"},
             {"/hf/api/models/(?:[^/]+/)?[^/]+/paths-info/.+", "POST"},
             {"/hf/.+", "GET, HEAD"}}) {
      routes.push_back({std::regex(pattern), methods});
    }
    return routes;
  }();
  for (const auto& route : kRoutes) {
    if (std::regex_match(path, route.pattern)) return route.methods;
  }
  return std::nullopt;
}

// cpp-httplib answers some failures itself (no route, bad request line) with an empty body;
// give those the API's JSON error shape too. The path is outside text: sanitised.
std::pair<std::string_view, std::string> default_error(const Request& request, int status) {
  switch (status) {
    case 404:
      return {"not_found",
              fmt::format("no route for {} {}", narration::sanitize(request.method, 16),
                          narration::sanitize(request.path, 256))};
    case 405:
      return {"method_not_allowed", "this method is not allowed here"};
    case 414:
      return {"uri_too_long", "the request URI is too long"};
    default:
      return {"bad_request", fmt::format("the request could not be served ({})", status)};
  }
}

bool is_json_content_type(const std::string& value) {
  const auto media_type = value.substr(0, value.find(';'));
  return media_type == "application/json";
}

bool is_state_changing(const std::string& method) {
  return method != "GET" && method != "HEAD" && method != "OPTIONS";
}

ConnectionLimits connection_limits(const HiveConfig& config) {
  ConnectionLimits limits;
  limits.max_connections = config.max_connections;
  limits.max_connections_per_client = config.max_connections_per_client;
  limits.head_timeout = config.head_timeout;
  return limits;
}

int http_status_of(catalog::CatalogErrorCode code) {
  return code == catalog::CatalogErrorCode::io_error ? 500 : 400;
}

}  // namespace

// The mirror's pull-through: ordinary model_download jobs, one per model (or file) and revision
// at a time, visible in /v1/jobs and narrated like any other.
class HiveServer::MirrorJobs : public mirror::PullThrough {
 public:
  explicit MirrorJobs(HiveServer& server) : server_(server) {}

  Pull start(const std::string& model, const std::string& revision) override {
    std::lock_guard lock(mutex_);
    const std::string key = model + "@" + revision;
    if (const auto found = running_.find(key); found != running_.end()) {
      const auto job = server_.registry_.get(found->second);
      if (job && !jobs::is_finished(job->status().state)) return {found->second, false};
      running_.erase(found);
    }
    jobs::ModelDownload download{"localhost", model, revision, {}, {}, std::nullopt, {}, true};
    auto submitted = server_.submit(std::move(download));
    if (const auto* refusal = std::get_if<Refusal>(&submitted)) {
      throw std::runtime_error(refusal->message);
    }
    const auto& job = std::get<std::shared_ptr<jobs::Job>>(submitted);
    server_.narrator_.emit({"mirror", "mirror_pull", model,
                            fmt::format("A peer asked for {}@{}, which this hive lacks: pulling it "
                                        "from upstream as {}",
                                        model, revision, job->id()),
                            job->id(), narration::Level::info, 0, std::nullopt});
    if (running_.size() >= kMaxRemembered) running_.clear();  // only a dedup hint
    running_[key] = job->id();
    return {job->id(), true};
  }

  Status status(const std::string& job_id) const override {
    const auto job = server_.registry_.get(job_id);
    if (!job) return {State::failed, "the job is no longer known", "other"};
    const auto status = job->status();
    switch (status.state) {
      case jobs::JobState::completed:
        return {State::completed, "", ""};
      case jobs::JobState::failed:
        return {State::failed, status.error, status.error_code};
      case jobs::JobState::cancelled:
        return {State::failed, "the download was cancelled", "cancelled"};
      default:
        return {State::running, "", ""};
    }
  }

 private:
  static constexpr std::size_t kMaxRemembered = 10000;
  HiveServer& server_;
  std::mutex mutex_;
  std::map<std::string, std::string> running_;  // "model@revision" → job id
};

HiveServer::HiveServer(const HiveConfig& config, jobs::JobRegistry& registry,
                       jobs::JobRouter& router, catalog::ModelCatalog& catalog,
                       const provisioner::ModelProvisioner& provisioner,
                       const narration::Narrator& narrator)
    : config_(config),
      registry_(registry),
      router_(router),
      catalog_(catalog),
      provisioner_(provisioner),
      narrator_(narrator),
      server_(connection_limits(config)),
      stream_tickets_(config.max_stream_tickets),
      mirror_jobs_(std::make_unique<MirrorJobs>(*this)),
      mirror_(std::make_unique<mirror::HubMirror>(catalog, provisioner, *mirror_jobs_, narrator,
                                                  config.mirror)) {
  install_routes();
  install_instrumentation();
}

HiveServer::~HiveServer() {
  shutdown();
}

int HiveServer::bind() {
  return server_.bind(config_.bind, config_.port);
}

bool HiveServer::serve() {
  return server_.serve();
}

void HiveServer::shutdown() {
  std::call_once(shutdown_once_, [this] {
    {
      std::lock_guard lock(submit_mutex_);
      draining_ = true;
    }
    registry_.cancel_all();
    router_.shutdown();  // every job has now ended; its stream has its terminal line
    const auto deadline = std::chrono::steady_clock::now() + kStreamDrainTimeout;
    while (open_streams_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // wait for streams to flush
    }
    stopping_ = true;  // streams still open (a watcher that reads nothing) end now
    mirror_->stop();   // and so do mirror requests waiting for a pull or for bytes
    server_.stop();
  });
}

bool HiveServer::authorized(const Request& request) const {
  // The dashboard page holds no data: it asks for the token and sends it on every call.
  const bool public_route = (request.method == "GET" || request.method == "HEAD") &&
                            (request.path == "/health" || request.path == "/");
  if (config_.api_token.empty() || public_route) return true;
  if (request.method == "GET" && request.has_param("ticket")) {
    static constexpr std::string_view kJobs = "/v1/jobs/", kStream = "/stream";
    const std::string_view path = request.path;
    if (path.starts_with(kJobs) && path.ends_with(kStream) &&
        path.size() > kJobs.size() + kStream.size()) {
      const std::string job_id(
          path.substr(kJobs.size(), path.size() - kJobs.size() - kStream.size()));
      return stream_tickets_.admits(request.get_param_value("ticket"), job_id);
    }
  }
  const std::string expected = "Bearer " + config_.api_token;
  const std::string& given = request.get_header_value("Authorization");
  return given.size() == expected.size() &&
         CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

// A request is routed, handled and logged on one server thread: the pre-routing handler stamps
// its start here and the logger reads it.
thread_local std::optional<std::chrono::steady_clock::time_point> t_request_started;

void HiveServer::install_instrumentation() {
  server_.set_logger([this](const Request& request, const Response& response) {
    std::optional<std::chrono::duration<double>> latency;
    if (t_request_started) latency = std::chrono::steady_clock::now() - *t_request_started;
    t_request_started.reset();
    http_metrics_.observe(request.method, route_of(request.path), response.status, latency);
  });
}

// Who may ask anything at all; runs before the body is read (GuardedServer closes the
// connection after any answer given here).
httplib::Server::HandlerResponse HiveServer::admit(const Request& request, Response& response) {
  t_request_started = std::chrono::steady_clock::now();
  using Outcome = httplib::Server::HandlerResponse;
  const std::string host = request.get_header_value("Host");
  if (request.get_header_value_count("Host") > 1) {
    send_error(response, 400, "bad_request", "the request has more than one Host header");
    return Outcome::Handled;
  }
  // Without a token, a web page could reach the hive through DNS rebinding: serve only names
  // that cannot be rebound.
  if (config_.api_token.empty() && !is_allowed_host(host, config_.allowed_hosts)) {
    send_error(response, 403, "host_not_allowed",
               "without an API token the hive answers only to 127.0.0.1, localhost and [::1]; "
               "start it with --allowed-host NAME to serve another name");
    return Outcome::Handled;
  }
  if (is_state_changing(request.method) &&
      !is_same_origin(request.get_header_value("Origin"), host)) {
    send_error(response, 403, "origin_not_allowed",
               "requests from another web origin may not change the hive's state");
    return Outcome::Handled;
  }
  if (authorized(request)) return Outcome::Unhandled;
  response.set_header("WWW-Authenticate", "Bearer");
  send_error(response, 401, "unauthorized",
             "a valid API token is required: send 'Authorization: Bearer <token>'");
  return Outcome::Handled;
}

void HiveServer::install_routes() {
  server_.set_request_guard(
      [this](const Request& request, Response& response) { return admit(request, response); });
  server_.set_error_handler([](const Request& request, Response& response) {
    if (!response.body.empty()) return;
    if (response.status == 404) {  // no handler: a known path asked with another method?
      if (const auto methods = allowed_methods(request.path);
          methods && methods->find(request.method) == std::string_view::npos) {
        response.status = 405;
        response.set_header("Allow", std::string(*methods));
        return send_error(
            response, 405, "method_not_allowed",
            fmt::format("{} allows {}", narration::sanitize(request.path, 256), *methods));
      }
    }
    auto [code, message] = default_error(request, response.status);
    send_error(response, response.status, code, message);
  });
  server_.set_exception_handler([this](const Request&, Response& response, std::exception_ptr) {
    // Handlers map their known errors themselves; anything here is a bug, kept from the client.
    narrator_.emit({"hive", "http_internal_error", "http", "a request handler threw", "",
                    narration::Level::error, 0, std::nullopt});
    send_error(response, 500, "internal_error", "the hive failed to serve this request");
  });

  server_.Get("/health", [this](const Request&, Response& response) {
    std::size_t active = 0;
    for (const auto& job : registry_.list())
      active += jobs::is_finished(job->status().state) ? 0 : 1;
    send_json(response, 200,
              {{"status", "ok"}, {"version", RBEE_VERSION}, {"active_jobs", active}});
  });
  server_.Get("/", [](const Request&, Response& response) {
    response.set_header(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    response.set_header("X-Content-Type-Options", "nosniff");
    response.set_header("Cache-Control", "no-cache");
    response.set_content(std::string(dashboard_page()), "text/html; charset=utf-8");
  });
  server_.Post(R"(/v1/jobs/([^/]+)/stream-ticket)",
               [this](const Request& request, Response& response) {
                 const std::string job_id = request.matches[1].str();
                 if (!registry_.get(job_id))
                   return send_error(response, 404, "job_not_found", "no job with that id");
                 const auto ticket = stream_tickets_.issue(job_id);
                 if (!ticket) {
                   response.set_header("Retry-After", std::to_string(kRetryAfterSeconds));
                   return send_error(response, 429, "too_many_stream_tickets",
                                     "too many stream tickets are outstanding; retry later");
                 }
                 send_json(response, 200,
                           {{"ticket", *ticket},
                            {"expires_in_s", StreamTickets::kLifetime.count()},
                            {"stream_url", sse_url(job_id) + "?ticket=" + *ticket}});
               });
  server_.Get("/metrics", [this](const Request&, Response& response) {
    std::map<std::string, std::uint64_t> submitted;
    {
      std::lock_guard lock(submit_mutex_);
      submitted = jobs_submitted_;
    }
    const MetricsSources sources{registry_,       catalog_,        provisioner_,
                                 http_metrics_,   submitted,       open_streams_.load(),
                                 server_.stats(), mirror_->stats()};
    response.set_content(render_metrics(sources), "text/plain; version=0.0.4");
  });
  mirror_->install(server_);
  server_.Post("/v1/jobs", [this](const Request& request, Response& response) {
    handle_submit(request, response);
  });
  server_.Get("/v1/jobs", [this](const Request&, Response& response) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& job : registry_.list()) list.push_back(to_json(*job));
    send_json(response, 200, {{"jobs", std::move(list)}});
  });
  server_.Get(R"(/v1/jobs/([^/]+)/stream)", [this](const Request& request, Response& response) {
    handle_stream(request, response);
  });
  server_.Get(R"(/v1/jobs/([^/]+))", [this](const Request& request, Response& response) {
    auto job = registry_.get(request.matches[1].str());
    if (!job) return send_error(response, 404, "job_not_found", "no job with that id");
    send_json(response, 200, to_json(*job));
  });
  server_.Delete(R"(/v1/jobs/([^/]+))", [this](const Request& request, Response& response) {
    handle_cancel(request, response);
  });
  server_.Get("/v1/models", [this](const Request&, Response& response) {
    nlohmann::json models = nlohmann::json::array();
    for (const auto& entry : catalog_.list()) models.push_back(to_json(entry));
    send_json(response, 200, {{"models", std::move(models)}});
  });
  server_.Get(R"(/v1/models/(.+))", [this](const Request& request, Response& response) {
    try {
      const auto id = catalog::parse_model_id(request.matches[1].str());
      auto entry = catalog_.get(id);
      if (!entry) return send_error(response, 404, "model_not_found", "no model with that id");
      send_json(response, 200, to_json(*entry));
    } catch (const catalog::CatalogError& error) {
      send_error(response, 400, catalog::to_string(error.code()), error.what());
    }
  });
}

void HiveServer::handle_submit(const Request& request, Response& response) {
  if (!is_json_content_type(request.get_header_value("Content-Type"))) {
    return send_error(response, 415, "unsupported_media_type",
                      "send the job as JSON with 'Content-Type: application/json'");
  }
  jobs::Operation operation;
  try {
    operation = jobs::parse_operation(request.body);
    validate_operation(operation);
  } catch (const jobs::OperationError& error) {
    return send_error(response, 400, jobs::to_string(error.code()), error.what());
  } catch (const catalog::CatalogError& error) {
    return send_error(response, http_status_of(error.code()), catalog::to_string(error.code()),
                      error.what());
  }

  auto submitted = submit(std::move(operation));
  if (const auto* refusal = std::get_if<Refusal>(&submitted)) {
    if (refusal->status == 429) {
      response.set_header("Retry-After", std::to_string(kRetryAfterSeconds));
    }
    return send_error(response, refusal->status, refusal->code, refusal->message);
  }
  const auto& job = std::get<std::shared_ptr<jobs::Job>>(submitted);
  send_json(response, 202, {{"job_id", job->id()}, {"sse_url", sse_url(job->id())}});
}

std::variant<std::shared_ptr<jobs::Job>, HiveServer::Refusal> HiveServer::submit(
    jobs::Operation operation) {
  std::lock_guard lock(submit_mutex_);
  if (draining_) return Refusal{503, "shutting_down", "the hive is shutting down"};
  if (registry_.unfinished() >= config_.max_queued_jobs) {
    return Refusal{429, "too_many_jobs",
                   fmt::format("{} jobs are queued or running, the most this hive holds; "
                               "retry when some have finished",
                               config_.max_queued_jobs)};
  }
  auto job = registry_.create(std::move(operation));
  ++jobs_submitted_[std::string(job->operation_name())];
  router_.submit(job);
  return job;
}

void HiveServer::handle_stream(const Request& request, Response& response) {
  auto job = registry_.get(request.matches[1].str());
  if (!job) return send_error(response, 404, "job_not_found", "no job with that id");

  std::uint64_t cursor = 0;
  if (request.has_header("Last-Event-ID")) {
    const auto last_seen = parse_last_event_id(request.get_header_value("Last-Event-ID"));
    const std::uint64_t last_seq = job->events().last_seq();
    if (!last_seen || *last_seen > last_seq) {
      return send_error(
          response, 400, "invalid_last_event_id",
          fmt::format("Last-Event-ID must be an event id of this job (0 to {})", last_seq));
    }
    // Reconnecting after the terminal event: 204 tells a standard EventSource to stop.
    if (job->events().is_terminal(*last_seen)) {
      response.status = 204;
      return;
    }
    cursor = *last_seen;
  }

  std::string accept;
  for (std::size_t i = 0; i < request.get_header_value_count("Accept"); ++i) {
    accept += request.get_header_value("Accept", i) + ",";
  }
  const StreamProfile profile = stream_profile_for(accept);
  const auto idle_interval =
      profile == StreamProfile::rbee ? kRbeeIdleInterval : config_.sse_heartbeat;

  ++open_streams_;
  response.set_header("Cache-Control", "no-cache");
  response.set_header("X-Accel-Buffering", "no");
  // Exactly text/event-stream: any other type is compressed and buffered by cpp-httplib.
  response.set_chunked_content_provider(
      "text/event-stream",
      [this, job, cursor, profile, idle_interval, last_write = std::chrono::steady_clock::now()](
          std::size_t, httplib::DataSink& sink) mutable {
        // Waits until the stream has been silent for one idle interval (since whatever it last
        // wrote, not since this call), in slices so that shutdown is never kept waiting, and
        // every call writes something: events, the end, or the idle line (which also finds a
        // watcher who has gone).
        const auto idle_due = last_write + idle_interval;
        jobs::EventLog::Batch batch;
        while (batch.entries.empty() && !batch.finished) {
          if (stopping_) return false;
          const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
              idle_due - std::chrono::steady_clock::now());
          if (left.count() <= 0) {
            const std::string idle = format_idle(profile, *job);
            last_write = std::chrono::steady_clock::now();
            return sink.write(idle.data(), idle.size());
          }
          batch = job->events().read_after(cursor, std::min(left, kStreamWaitSlice));
        }
        std::string chunk;
        for (const auto& entry : batch.entries) {
          chunk += format_event(profile, entry);
          cursor = entry.seq;
        }
        if (!chunk.empty() && !sink.write(chunk.data(), chunk.size())) return false;
        if (!chunk.empty()) last_write = std::chrono::steady_clock::now();
        if (batch.finished) sink.done();
        return true;
      },
      [this](bool) { --open_streams_; });
}

void HiveServer::handle_cancel(const Request& request, Response& response) {
  const std::string id = request.matches[1].str();
  switch (registry_.cancel(id)) {
    case jobs::JobRegistry::CancelResult::not_found:
      return send_error(response, 404, "job_not_found", "no job with that id");
    case jobs::JobRegistry::CancelResult::already_finished:
      return send_error(response, 409, "job_finished", "the job has already finished");
    case jobs::JobRegistry::CancelResult::cancelled:
      narrator_.emit({"hive", "job_cancel_requested", id, "Cancellation requested", id,
                      narration::Level::info, 0, std::nullopt});
      return send_json(response, 200, {{"job_id", id}, {"status", "cancelled"}});
  }
}

}  // namespace rbee::hive
