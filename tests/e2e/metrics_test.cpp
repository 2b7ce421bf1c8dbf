// End to end: GET /metrics of the real hive after real downloads, read as Prometheus text.

#include <regex>

#include "e2e/hive_with_hub.hpp"

using namespace rbee::testing;

namespace {

// The value of one sample line, e.g. sample(text, "rbee_jobs{operation=\"model_download\",…}").
std::optional<double> sample(const std::string& text, const std::string& series) {
  const std::string prefix = series + " ";
  for (std::size_t at = 0; at < text.size();) {
    const auto end = text.find('\n', at);
    const std::string line = text.substr(at, end - at);
    if (line.starts_with(prefix)) return std::stod(line.substr(prefix.size()));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return std::nullopt;
}

std::string scrape(const HiveProcess& hive) {
  auto response = hive.client()->Get("/metrics");
  REQUIRE(response);
  REQUIRE(response->status == 200);
  CHECK(response->get_header_value("Content-Type").starts_with("text/plain; version=0.0.4"));
  return response->body;
}

// The hive counts a request once it has written the answer, so a request the test just saw
// answered may be counted a moment later: scrape until the series says `expected` (3 s at most).
std::optional<double> settled_sample(const HiveProcess& hive, const std::string& series,
                                     double expected) {
  std::optional<double> value;
  for (int i = 0; i < 300 && value != expected; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    value = sample(scrape(hive), series);
  }
  return value;
}

}  // namespace

TEST_CASE("/metrics counts jobs, bytes, errors, models and requests after real downloads") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));
  REQUIRE(h.download({{"model", "acme/tiny"}}).terminal() == "[DONE]");
  REQUIRE(h.download({{"model", "acme/missing"}}).terminal().starts_with("[ERROR]"));

  const std::string text = scrape(*h.hive.hive);
  constexpr double kTinyBytes = 613 + 4099 + 2 * 1024 * 1024 + 3;
  CHECK(sample(text, R"(rbee_jobs{operation="model_download",state="completed"})") == 1);
  CHECK(sample(text, R"(rbee_jobs{operation="model_download",state="failed"})") == 1);
  CHECK(sample(text, R"(rbee_jobs{operation="model_list",state="running"})") == 0);
  CHECK(sample(text, R"(rbee_jobs_submitted_total{operation="model_download"})") == 2);
  CHECK(sample(text, "rbee_download_bytes_total") == kTinyBytes);
  CHECK(sample(text, R"(rbee_download_errors_total{kind="repo_not_found"})") == 1);
  CHECK(sample(text, "rbee_active_downloads") == 0);
  CHECK(sample(text, "rbee_download_retries_total") == 0);
  // Single-connection files under 8 MiB leave their writeback to the fsync.
  CHECK(sample(text, "rbee_download_writeback_bytes_total") == 0);
  CHECK(sample(text, "rbee_download_speed_bytes_per_second").has_value());
  CHECK(sample(text, R"(rbee_catalog_models{status="ready"})") == 1);
  CHECK(sample(text, R"(rbee_catalog_models{status="failed"})") == 0);
  CHECK(sample(text, "rbee_catalog_ready_bytes") == kTinyBytes);
  CHECK(settled_sample(*h.hive.hive, "rbee_sse_watchers", 0) == 0);
  CHECK(sample(text, R"(rbee_http_requests_total{method="POST",route="/v1/jobs",status="202"})") ==
        2);
  // The streams ended as the test read [DONE]; the hive's side may close a moment later.
  CHECK(settled_sample(
            *h.hive.hive,
            R"(rbee_http_requests_total{method="GET",route="/v1/jobs/{id}/stream",status="200"})",
            2) == 2);
  CHECK(sample(text,
               R"(rbee_http_request_duration_seconds_count{method="POST",route="/v1/jobs"})") == 2);
  CHECK(
      sample(
          text,
          R"(rbee_http_request_duration_seconds_bucket{method="POST",route="/v1/jobs",le="+Inf"})") ==
      2);
  // Every family is announced with its type, as scrapers expect.
  for (const auto* family : {"rbee_jobs gauge", "rbee_download_bytes_total counter",
                             "rbee_http_request_duration_seconds histogram"}) {
    CHECK_MESSAGE(text.find(std::string("# TYPE ") + family) != std::string::npos, family);
  }
}

TEST_CASE("/metrics counts retries and an unknown route under one label") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));
  h.hub.set_faults("model.Q4_K_M.gguf", Faults{.times = 2, .error_status = 503});
  REQUIRE(h.download({{"model", "acme/tiny"}}).terminal() == "[DONE]");
  CHECK(h.hive->client()->Get("/no/such/route")->status == 404);

  const std::string text = scrape(*h.hive.hive);
  CHECK(sample(text, "rbee_download_retries_total") >= 2);
  CHECK(settled_sample(*h.hive.hive,
                       R"(rbee_http_requests_total{method="GET",route="other",status="404"})",
                       1) == 1);
}

TEST_CASE("/metrics needs the API token like every route but /health") {
  HiveUnderTest hive({"--api-token", "metrics-token-123"}, "metrics-token-123");
  httplib::Client anonymous("127.0.0.1", hive->port());
  CHECK(anonymous.Get("/metrics")->status == 401);
  CHECK(hive->client()->Get("/metrics")->status == 200);
}
