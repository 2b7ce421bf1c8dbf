#include "rbee/hive/metrics.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace rbee::hive {
namespace {

// Label values are ids and kinds of our own making; escape anyway, as the format requires.
std::string escape_label(std::string_view value) {
  std::string escaped;
  for (char c : value) {
    if (c == '\\' || c == '"') escaped += '\\';
    if (c == '\n') {
      escaped += "\\n";
      continue;
    }
    escaped += c;
  }
  return escaped;
}

void append_header(std::string& text, std::string_view name, std::string_view type,
                   std::string_view help) {
  text += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

constexpr std::array<jobs::JobState, 5> kJobStates = {
    jobs::JobState::queued, jobs::JobState::running, jobs::JobState::completed,
    jobs::JobState::failed, jobs::JobState::cancelled};

constexpr std::array<catalog::ModelStatus, 6> kModelStatuses = {
    catalog::ModelStatus::downloading, catalog::ModelStatus::ready,
    catalog::ModelStatus::failed,      catalog::ModelStatus::cancelled,
    catalog::ModelStatus::interrupted, catalog::ModelStatus::deleting};

void append_jobs(std::string& text, const MetricsSources& sources) {
  std::map<std::pair<std::string, jobs::JobState>, std::uint64_t> jobs_by;
  for (auto operation : jobs::supported_operations())
    for (auto state : kJobStates) jobs_by[{std::string(operation), state}] = 0;
  for (const auto& job : sources.registry.list())
    ++jobs_by[{std::string(job->operation_name()), job->status().state}];
  append_header(text, "rbee_jobs", "gauge",
                "Jobs the hive holds, by operation and state (finished ones until retention "
                "drops them).");
  for (const auto& [key, count] : jobs_by) {
    text += fmt::format("rbee_jobs{{operation=\"{}\",state=\"{}\"}} {}\n", key.first,
                        jobs::to_string(key.second), count);
  }
  append_header(text, "rbee_jobs_submitted_total", "counter", "Jobs accepted, by operation.");
  for (auto operation : jobs::supported_operations()) {
    const auto found = sources.jobs_submitted.find(std::string(operation));
    text += fmt::format("rbee_jobs_submitted_total{{operation=\"{}\"}} {}\n", operation,
                        found == sources.jobs_submitted.end() ? 0 : found->second);
  }
}

void append_downloads(std::string& text, const MetricsSources& sources) {
  const auto stats = sources.provisioner.stats().snapshot();
  append_header(text, "rbee_active_downloads", "gauge",
                "Model downloads running now (queued ones excluded).");
  text += fmt::format("rbee_active_downloads {}\n", sources.provisioner.active_downloads());
  append_header(text, "rbee_download_bytes_total", "counter",
                "Bytes received from the Hub and written to part files.");
  text += fmt::format("rbee_download_bytes_total {}\n", stats.bytes_downloaded);
  append_header(text, "rbee_download_reused_bytes_total", "counter",
                "Bytes of Xet chunks copied from files already on disk instead of downloaded.");
  text += fmt::format("rbee_download_reused_bytes_total {}\n", stats.bytes_reused);
  append_header(text, "rbee_download_writeback_bytes_total", "counter",
                "Bytes of verified files whose writeback to disk began while they downloaded "
                "(the rest waited for the fsync before the publish).");
  text += fmt::format("rbee_download_writeback_bytes_total {}\n", stats.bytes_written_back);
  append_header(text, "rbee_download_speed_bytes_per_second", "gauge",
                "Download speed over the last 3 seconds, all downloads together.");
  text += fmt::format("rbee_download_speed_bytes_per_second {:.0f}\n", stats.bytes_per_second);
  append_header(text, "rbee_download_retries_total", "counter",
                "Listings and transfers attempted again after a failure.");
  text += fmt::format("rbee_download_retries_total {}\n", stats.retries);
  append_header(text, "rbee_download_errors_total", "counter",
                "Files and downloads that failed, by kind of error.");
  for (const auto& [kind, count] : stats.errors_by_kind) {
    text +=
        fmt::format("rbee_download_errors_total{{kind=\"{}\"}} {}\n", escape_label(kind), count);
  }
}

void append_mirror(std::string& text, const MetricsSources& sources) {
  const mirror::MirrorStats& mirror = sources.mirror;
  append_header(text, "rbee_mirror_bytes_served_total", "counter",
                "File bytes the /hf mirror sent to peers and Hub clients.");
  text += fmt::format("rbee_mirror_bytes_served_total {}\n", mirror.bytes_served);
  append_header(text, "rbee_mirror_upstream_bytes_total", "counter",
                "Bytes the mirror's pull-through downloads fetched from upstream.");
  text += fmt::format("rbee_mirror_upstream_bytes_total {}\n",
                      sources.provisioner.stats().snapshot().bytes_for_mirror);
  append_header(text, "rbee_mirror_files_served_total", "counter",
                "Mirror responses that reached the end of a file.");
  text += fmt::format("rbee_mirror_files_served_total {}\n", mirror.files_served);
  append_header(text, "rbee_mirror_pulls_total", "counter",
                "model_download jobs the mirror started for what this hive lacked.");
  text += fmt::format("rbee_mirror_pulls_total {}\n", mirror.pulls);
  append_header(text, "rbee_mirror_requests_total", "counter", "Mirror requests, by route.");
  for (const auto& [route, count] : mirror.requests_by_route) {
    text +=
        fmt::format("rbee_mirror_requests_total{{route=\"{}\"}} {}\n", escape_label(route), count);
  }
}

void append_catalog(std::string& text, const MetricsSources& sources) {
  std::map<catalog::ModelStatus, std::uint64_t> models;
  std::uint64_t ready_bytes = 0;
  for (auto status : kModelStatuses) models[status] = 0;
  for (const auto& entry : sources.catalog.list()) {
    ++models[entry.status];
    if (entry.status == catalog::ModelStatus::ready) ready_bytes += entry.bytes_total;
  }
  append_header(text, "rbee_catalog_models", "gauge", "Models in the catalog, by status.");
  for (const auto& [status, count] : models) {
    text +=
        fmt::format("rbee_catalog_models{{status=\"{}\"}} {}\n", catalog::to_string(status), count);
  }
  append_header(text, "rbee_catalog_ready_bytes", "gauge", "Bytes of the ready models.");
  text += fmt::format("rbee_catalog_ready_bytes {}\n", ready_bytes);
  append_header(text, "rbee_catalog_writes_total", "counter",
                "metadata.yaml documents written (each a temp file, two fsyncs and a rename).");
  text += fmt::format("rbee_catalog_writes_total {}\n", sources.catalog.writes());
}

}  // namespace

void HttpMetrics::observe(std::string_view method, std::string_view route, int status,
                          std::optional<std::chrono::duration<double>> latency) {
  // Labels from outside are bounded: a client inventing methods must not grow the metrics.
  static constexpr std::array<std::string_view, 7> kMethods = {"GET",    "HEAD",    "POST", "PUT",
                                                               "DELETE", "OPTIONS", "PATCH"};
  if (std::find(kMethods.begin(), kMethods.end(), method) == kMethods.end()) method = "other";
  if (status < 100 || status > 599) status = 0;
  std::lock_guard lock(mutex_);
  ++requests_[{std::string(method), std::string(route), status}];
  if (!latency) return;
  auto& histogram = latency_[{std::string(method), std::string(route)}];
  const double seconds = latency->count();
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++histogram.buckets[i];
      break;
    }
  }
  ++histogram.count;
  histogram.sum += seconds;
}

void HttpMetrics::append_to(std::string& text) const {
  std::lock_guard lock(mutex_);
  append_header(text, "rbee_http_requests_total", "counter",
                "HTTP requests answered, by method, route and status.");
  for (const auto& [key, count] : requests_) {
    const auto& [method, route, status] = key;
    text += fmt::format("rbee_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{}\"}} {}\n",
                        escape_label(method), route, status, count);
  }
  append_header(text, "rbee_http_request_duration_seconds", "histogram",
                "Time from routing to the last byte of the answer (for an SSE stream: how long "
                "the watcher stayed).");
  for (const auto& [key, histogram] : latency_) {
    const auto labels =
        fmt::format("method=\"{}\",route=\"{}\"", escape_label(key.first), key.second);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kBuckets.size(); ++i) {
      cumulative += histogram.buckets[i];
      text += fmt::format("rbee_http_request_duration_seconds_bucket{{{},le=\"{}\"}} {}\n", labels,
                          kBuckets[i], cumulative);
    }
    text += fmt::format("rbee_http_request_duration_seconds_bucket{{{},le=\"+Inf\"}} {}\n", labels,
                        histogram.count);
    text += fmt::format("rbee_http_request_duration_seconds_sum{{{}}} {}\n", labels, histogram.sum);
    text +=
        fmt::format("rbee_http_request_duration_seconds_count{{{}}} {}\n", labels, histogram.count);
  }
}

std::string route_of(std::string_view path) {
  static constexpr std::string_view kJobs = "/v1/jobs/", kModels = "/v1/models/";
  if (path == "/" || path == "/health" || path == "/metrics" || path == "/v1/jobs" ||
      path == "/v1/models") {
    return std::string(path);
  }
  if (path.starts_with(kModels) && path.size() > kModels.size()) return "/v1/models/{id}";
  if (auto mirror_route = mirror::mirror_route_of(path); !mirror_route.empty()) {
    return mirror_route;
  }
  if (!path.starts_with(kJobs)) return "other";
  const auto rest = path.substr(kJobs.size());
  const auto slash = rest.find('/');
  if (rest.empty()) return "other";
  if (slash == std::string_view::npos) return "/v1/jobs/{id}";
  const auto tail = rest.substr(slash);
  if (tail == "/stream" || tail == "/stream-ticket") return "/v1/jobs/{id}" + std::string(tail);
  return "other";
}

std::string render_metrics(const MetricsSources& sources) {
  std::string text;
  append_jobs(text, sources);
  append_downloads(text, sources);
  append_mirror(text, sources);
  append_catalog(text, sources);
  append_header(text, "rbee_sse_watchers", "gauge", "Job event streams open now.");
  text += fmt::format("rbee_sse_watchers {}\n", sources.sse_watchers);
  const ConnectionStats& connections = sources.connections;
  append_header(text, "rbee_http_connections", "gauge",
                "HTTP connections open now: waiting for a request head, or being served.");
  text += fmt::format("rbee_http_connections{{state=\"waiting\"}} {}\n", connections.waiting);
  text += fmt::format("rbee_http_connections{{state=\"served\"}} {}\n", connections.served);
  append_header(text, "rbee_http_connections_closed_total", "counter",
                "Connections the hive closed to protect itself, by reason.");
  for (const auto& [reason, count] :
       {std::pair{"evicted", connections.evicted}, std::pair{"refused", connections.refused},
        std::pair{"head_timeout", connections.timed_out}}) {
    text += fmt::format("rbee_http_connections_closed_total{{reason=\"{}\"}} {}\n", reason, count);
  }
  sources.http.append_to(text);
  return text;
}

}  // namespace rbee::hive
