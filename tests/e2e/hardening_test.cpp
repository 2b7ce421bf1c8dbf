// End to end: the promises of DESIGN §12 for the HTTP surface, against the real binary, with
// clients that misbehave on purpose.

#include <atomic>
#include <thread>

#include <yaml-cpp/yaml.h>

#include "e2e/helpers.hpp"
#include "e2e/hive_with_hub.hpp"
#include "hub_fixture/hub_fixture.hpp"
#include "support/raw_connection.hpp"

using namespace rbee::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string head(int port, std::string_view method, std::string_view path,
                 std::string_view more_headers = "") {
  return std::string(method) + " " + std::string(path) +
         " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n" +
         std::string(more_headers) + "\r\n";
}

std::size_t count_responses(const std::string& bytes) {
  std::size_t count = 0;
  for (auto pos = bytes.find("HTTP/1.1 "); pos != std::string::npos;
       pos = bytes.find("HTTP/1.1 ", pos + 1)) {
    ++count;
  }
  return count;
}

// Sends `total` bytes of chunked body in the background until the hive stops reading.
std::thread send_chunked_body(RawConnection& connection, std::size_t total) {
  return std::thread([&connection, total] {
    const std::string chunk = "100000\r\n" + std::string(0x100000, 'x') + "\r\n";
    for (std::size_t sent = 0; sent < total; sent += 0x100000) {
      if (!connection.send(chunk)) return;
    }
  });
}

int jobs_listed(const HiveProcess& hive) {
  return static_cast<int>(get_json(hive, "/v1/jobs")["jobs"].size());
}

double metric(const HiveProcess& hive, const std::string& series) {
  const auto res = hive.client()->Get("/metrics");
  REQUIRE(res);
  const auto at = res->body.find("\n" + series + " ");
  REQUIRE_MESSAGE(at != std::string::npos, series);
  return std::stod(res->body.substr(at + series.size() + 2));
}

}  // namespace

TEST_CASE("a chunked body is refused before it is read: 411, closed, memory flat, on any route") {
  HiveUnderTest hive;
  const auto before = resident_bytes(hive->pid());
  for (const std::string path : {"/v1/jobs", "/health", "/no/such/route"}) {
    CAPTURE(path);
    RawConnection connection(hive->port());
    REQUIRE(
        connection.send(head(hive->port(), "POST", path,
                             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n")));
    std::thread body = send_chunked_body(connection, 128u << 20);
    const std::string answer = connection.read_until_closed();
    body.join();
    CHECK(answer.starts_with("HTTP/1.1 411"));
    CHECK(answer.find("\"length_required\"") != std::string::npos);
    CHECK(count_responses(answer) == 1);
  }
  CHECK(resident_bytes(hive->pid()) < before + (32u << 20));
  CHECK(jobs_listed(*hive.hive) == 0);
}

TEST_CASE("a compressed body is refused with 415 and creates no job") {
  HiveUnderTest hive;
  httplib::Headers headers = {{"Content-Encoding", "gzip"}};
  auto res = hive->client()->Post("/v1/jobs", headers, std::string(1024, '\0'), "application/json");
  REQUIRE(res);
  CHECK(res->status == 415);
  CHECK(json::parse(res->body)["error"]["code"] == "unsupported_content_encoding");
  CHECK(res->get_header_value("Connection") == "close");
  CHECK(jobs_listed(*hive.hive) == 0);
}

TEST_CASE("a declared body over 1 MiB is answered 413 before a byte of it is sent") {
  HiveUnderTest hive;
  RawConnection connection(hive->port());
  REQUIRE(connection.send(head(hive->port(), "POST", "/v1/jobs",
                               "Content-Type: application/json\r\nContent-Length: 300000000\r\n")));
  const std::string answer = connection.read_until_closed(5s);
  CHECK(answer.starts_with("HTTP/1.1 413"));
  CHECK(answer.find("Connection: close") != std::string::npos);
}

TEST_CASE("a request hidden in the body behind an early 401 is never parsed") {
  HiveUnderTest hive({"--api-token", "the-right-token"}, "the-right-token");
  const std::string smuggled =
      head(hive->port(), "GET", "/v1/models", "Authorization: Bearer the-right-token\r\n");
  RawConnection connection(hive->port());
  REQUIRE(connection.send(head(hive->port(), "POST", "/v1/jobs",
                               "Authorization: Bearer wrong\r\nContent-Type: application/json\r\n"
                               "Content-Length: " +
                                   std::to_string(smuggled.size()) + "\r\n") +
                          smuggled));
  const std::string answer = connection.read_until_closed();
  CHECK(answer.starts_with("HTTP/1.1 401"));
  CHECK(count_responses(answer) == 1);
  CHECK(answer.find("\"models\"") == std::string::npos);
}

TEST_CASE("with a token only GET and HEAD of / and /health are public") {
  HiveUnderTest hive({"--api-token", "the-right-token"}, "the-right-token");
  httplib::Client anonymous("127.0.0.1", hive->port());
  CHECK(anonymous.Get("/health")->status == 200);
  CHECK(anonymous.Head("/health")->status == 200);
  CHECK(anonymous.Get("/")->status == 200);
  CHECK(anonymous.Post("/health", "{}", "application/json")->status == 401);
  CHECK(anonymous.Delete("/")->status == 401);
  CHECK(anonymous.Get("/v1/jobs")->status == 401);
}

TEST_CASE("without a token only loopback Host names are served (DNS rebinding)") {
  HiveUnderTest hive({"--allowed-host", "hive.internal"});
  const std::string port = std::to_string(hive->port());
  auto get_with_host = [&](const std::string& host) {
    return hive->client()->Get("/v1/models", {{"Host", host}})->status;
  };
  CHECK(get_with_host("evil.example:" + port) == 403);
  CHECK(get_with_host("evil.example") == 403);
  CHECK(get_with_host("127.0.0.1.evil.example") == 403);
  CHECK(get_with_host("localhost:" + port) == 200);
  CHECK(get_with_host("LOCALHOST") == 200);
  CHECK(get_with_host("127.0.0.1:" + port) == 200);
  CHECK(get_with_host("[::1]:" + port) == 200);
  CHECK(get_with_host("hive.internal:" + port) == 200);
  const auto refused = hive->client()->Get("/health", {{"Host", "evil.example"}});
  CHECK(json::parse(refused->body)["error"]["code"] == "host_not_allowed");
  CHECK(refused->body.find("evil.example") == std::string::npos);  // headers are never echoed
}

TEST_CASE("with a token any Host is served to an authorised request") {
  HiveUnderTest hive({"--api-token", "the-right-token"}, "the-right-token");
  CHECK(hive->client()->Get("/v1/models", {{"Host", "gpu-7.cluster:7835"}})->status == 200);
}

TEST_CASE("state-changing requests from another web origin are refused") {
  HiveUnderTest hive;
  const std::string own = "http://127.0.0.1:" + std::to_string(hive->port());
  const std::string body = R"({"operation":"model_list"})";
  auto post = [&](httplib::Headers headers) {
    return hive->client()->Post("/v1/jobs", headers, body, "application/json")->status;
  };
  CHECK(post({{"Origin", "http://evil.example"}}) == 403);
  CHECK(post({{"Origin", "null"}}) == 403);
  CHECK(jobs_listed(*hive.hive) == 0);
  CHECK(post({{"Origin", own}}) == 202);  // the dashboard
  CHECK(post({}) == 202);                 // not a browser
  const std::string job_id = get_json(*hive.hive, "/v1/jobs")["jobs"][0]["job_id"];
  CHECK(hive->client()->Delete("/v1/jobs/" + job_id, {{"Origin", "http://evil.example"}})->status ==
        403);
}

TEST_CASE("a request head that does not arrive within its deadline is answered 408 and closed") {
  HiveUnderTest hive({"--request-head-timeout-ms", "300"});
  RawConnection silent(hive->port());
  RawConnection dripping(hive->port());
  REQUIRE(silent.send("GET /health HTTP/1.1\r\n"));
  // Bytes keep coming, but the whole head is late: a per-read timeout would never fire.
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    closed = !dripping.send("X") || dripping.closed_within(100ms);
  }
  CHECK(closed);
  CHECK(silent.read_until_closed(5s).starts_with("HTTP/1.1 408"));
  CHECK(hive->client()->Get("/health")->status == 200);
}

TEST_CASE("a slowloris flood of 1100 connections leaves /health and POST /v1/jobs answering") {
  HiveWithHub setup(fast_flags());
  setup.hub.add_repo(tiny_repo("org/slow"));
  setup.hub.set_rate_limit(256 * 1024);
  const auto& hive = *setup.hive.hive;
  const std::string download =
      hive.submit_job({{"operation", "model_download"}, {"model", "org/slow"}});

  std::vector<std::unique_ptr<RawConnection>> flood;
  for (int i = 0; i < 1100; ++i) {
    flood.push_back(std::make_unique<RawConnection>(hive.port()));
    flood.back()->send("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
  }
  for (int round = 0; round < 5; ++round) {
    for (auto& connection : flood) connection->send("a");
    auto client = hive.client();
    const auto health = client->Get("/health");
    REQUIRE(health);
    CHECK(health->status == 200);
    const auto submitted = hive.submit({{"operation", "model_list"}});
    REQUIRE(submitted);
    CHECK(submitted->status == 202);
  }
  CHECK(metric(hive, "rbee_http_connections_closed_total{reason=\"evicted\"}") > 0);
  CHECK(wait_for_state(hive, download, "running") != "failed");
}

TEST_CASE("SIGTERM ends the hive within 5 s with 200 stuck clients connected") {
  HiveUnderTest hive;
  ModelLockHolder held(hive.cache, "org", "held");
  const std::string blocked = start_blocked_job(*hive.hive, "org/held");
  std::vector<std::unique_ptr<RawConnection>> stuck;
  for (int i = 0; i < 200; ++i) {
    stuck.push_back(std::make_unique<RawConnection>(hive->port()));
    switch (i % 3) {
      case 0:  // half a head
        stuck.back()->send("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        break;
      case 1:  // a watcher that never reads
        stuck.back()->send(head(hive->port(), "GET", "/v1/jobs/" + blocked + "/stream"));
        break;
      default:  // a body that never comes
        stuck.back()->send(head(hive->port(), "POST", "/v1/jobs",
                                "Content-Type: application/json\r\nContent-Length: 100\r\n"));
    }
  }
  std::this_thread::sleep_for(200ms);  // let the hive take them all in
  CHECK(hive->stop(SIGTERM, 5s) == 0);
}

TEST_CASE("hostile bytes from the Hub fail the job cleanly: valid JSON stream, daemon alive") {
  HiveWithHub setup(fast_flags({"--min-range-mb", "1", "--download-attempts", "2"}));
  const std::string hostile = "\xff\xfe\x1b[31mRED\x1b[0m\x07\xc3(\xe2\x80\xae";
  FixtureRepo repo = tiny_repo("org/hostile");
  repo.files = {{"model.gguf", 3 * 1024 * 1024, true, 21}};
  setup.hub.add_repo(repo);
  setup.hub.set_faults("model.gguf", {.times = 1000, .content_range = "bytes " + hostile});
  FixtureRepo listing_fails = tiny_repo("org/broken");
  setup.hub.add_repo(listing_fails);
  setup.hub.set_faults("/api/models/org/broken",
                       {.times = 1000, .error_status = 400, .error_message = hostile});

  for (const std::string model : {"org/hostile", "org/broken"}) {
    CAPTURE(model);
    const SseStream stream = setup.download({{"model", model}});
    REQUIRE_FALSE(stream.events().empty());
    for (const auto& event : stream.events()) {
      CHECK(event.data.find('\x1b') == std::string::npos);
      CHECK(event.data.find('\x07') == std::string::npos);
      if (!event.is_terminal()) CHECK_FALSE(json::parse(event.data, nullptr, false).is_discarded());
    }
    CHECK(stream.terminal().starts_with("[ERROR]"));
  }
  CHECK(setup.hive->client()->Get("/health")->status == 200);
  const auto entry = setup.catalog_entry("org/hostile");
  CHECK(entry["status"].as<std::string>() == "failed");
  CHECK(entry["error"].as<std::string>().find('\x1b') == std::string::npos);
  CHECK(setup.hive->log().find('\x1b') == std::string::npos);
}

TEST_CASE("model_list answers at once while downloads run and wait queued") {
  HiveWithHub setup(fast_flags({"--max-concurrent-jobs", "4"}));
  setup.hub.set_rate_limit(64 * 1024);
  const auto& hive = *setup.hive.hive;
  std::vector<std::string> downloads;
  for (int i = 0; i < 6; ++i) {
    const std::string id = "org/slow" + std::to_string(i);
    setup.hub.add_repo(tiny_repo(id));
    downloads.push_back(hive.submit_job({{"operation", "model_download"}, {"model", id}}));
  }
  REQUIRE(wait_for_state(hive, downloads[3], "running") == "running");
  const std::string list = hive.submit_job({{"operation", "model_list"}});
  CHECK(watch(hive, list).terminal() == "[DONE]");
  CHECK(get_json(hive, "/v1/jobs/" + downloads[5])["state"] == "queued");  // still waiting
  for (const auto& id : downloads) hive.client()->Delete("/v1/jobs/" + id);
}

TEST_CASE("queued jobs are capped: beyond the cap POST /v1/jobs answers 429 with Retry-After") {
  HiveUnderTest hive({"--max-queued-jobs", "2"});
  ModelLockHolder held(hive.cache, "org", "held"), held2(hive.cache, "org", "held2");
  start_blocked_job(*hive.hive, "org/held");
  start_blocked_job(*hive.hive, "org/held2");
  const auto refused = hive->submit({{"operation", "model_list"}});
  REQUIRE(refused);
  CHECK(refused->status == 429);
  CHECK_FALSE(refused->get_header_value("Retry-After").empty());
  CHECK(json::parse(refused->body)["error"]["code"] == "too_many_jobs");
  held.release();
  held2.release();
}

TEST_CASE("a flood of short jobs keeps memory bounded and retention at its cap") {
  // ASan keeps freed memory in quarantine; a small one keeps RSS about the hive's own use.
  HiveUnderTest hive({"--max-finished-jobs", "50"}, "", {{"ASAN_OPTIONS", "quarantine_size_mb=4"}});
  auto client = hive->client();
  auto submit_many = [&](int count) {
    for (int i = 0; i < count; ++i) {
      const auto res =
          client->Post("/v1/jobs", R"({"operation":"model_list"})", "application/json");
      REQUIRE(res);
      if (res->status == 429) std::this_thread::sleep_for(1ms);  // the cap on queued jobs
    }
  };
  submit_many(2000);
  const auto warmed = resident_bytes(hive->pid());
  submit_many(4000);
  CHECK(resident_bytes(hive->pid()) < warmed + (24u << 20));
  CHECK(jobs_listed(*hive.hive) <= 50 + 1000);
  CHECK(hive->client()->Get("/health")->status == 200);
}
