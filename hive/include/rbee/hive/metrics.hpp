#pragma once
// Metrics: GET /metrics in the Prometheus text format (version 0.0.4). Each metric is
// documented in README.md, "Metrics".

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

#include <rbee/catalog/model_catalog.hpp>
#include <rbee/jobs/job_registry.hpp>
#include <rbee/mirror/hub_mirror.hpp>
#include <rbee/provisioner/model_provisioner.hpp>

#include "rbee/hive/guarded_server.hpp"

namespace rbee::hive {

// Requests served, by method, route and status, with a latency histogram. Thread-safe.
class HttpMetrics {
 public:
  // Upper bounds of the latency buckets, in seconds (+Inf is implied).
  static constexpr std::array<double, 12> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,   0.5,   1,    5};

  // `latency` is absent for a request refused before routing (a malformed request line).
  void observe(std::string_view method, std::string_view route, int status,
               std::optional<std::chrono::duration<double>> latency);
  void append_to(std::string& text) const;

 private:
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};  // not cumulative; summed on output
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
  std::map<std::pair<std::string, std::string>, Histogram> latency_;
};

// The route a path was served by, with ids replaced ("/v1/jobs/{id}/stream"), so labels stay
// few; "other" for paths the hive has no route for.
std::string route_of(std::string_view path);

struct MetricsSources {
  const jobs::JobRegistry& registry;
  const catalog::ModelCatalog& catalog;
  const provisioner::ModelProvisioner& provisioner;
  const HttpMetrics& http;
  const std::map<std::string, std::uint64_t>& jobs_submitted;  // by operation
  int sse_watchers;
  ConnectionStats connections;
  mirror::MirrorStats mirror;
};

std::string render_metrics(const MetricsSources& sources);

}  // namespace rbee::hive
