// End to end: rbee's own programs against this hive, by the rules of their code. The client
// below follows rbee's JobClient line for line (rbee-keeper/rbee,
// bin/99_shared_crates/job-client/src/lib.rs at 441519799371df6b0a390b2c47288d682cb256c3):
// POST /v1/jobs without looking at the status, parse {job_id}; GET the stream with reqwest's
// `Accept: */*`; split on LF, trim, strip "data: " or "data:", skip empty lines, hand every other
// line to the handler (rbee-keeper prints it), and stop at [DONE], [CANCELLED] or [ERROR].

#include <chrono>
#include <thread>

#include "e2e/helpers.hpp"
#include "e2e/hive_with_hub.hpp"
#include "hub_fixture/hub_fixture.hpp"

using namespace rbee::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

struct RbeeRun {
  std::string job_id;
  std::vector<std::string> printed;  // what rbee-keeper prints: every line given to the handler
  std::vector<std::chrono::steady_clock::time_point> arrived;
  std::string result;  // "ok", "Job was cancelled" or "Job failed: <message>"
};

std::string trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return "";
  const auto last = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(first, last - first + 1));
}

RbeeRun rbee_submit_and_stream(const HiveProcess& hive, const json& operation) {
  RbeeRun run;
  httplib::Client client("127.0.0.1", hive.port());
  client.set_read_timeout(30s);
  const auto submitted = client.Post("/v1/jobs", operation.dump(), "application/json");
  REQUIRE(submitted);
  const json response = json::parse(submitted->body, nullptr, false);
  REQUIRE_MESSAGE(response.contains("job_id"), "Failed to parse job response: " << submitted->body);
  run.job_id = response["job_id"];

  std::string buffer;
  bool finished = false;
  client.Get("/v1/jobs/" + run.job_id + "/stream", {{"Accept", "*/*"}},
             [&](const char* data, std::size_t length) {
               buffer.append(data, length);
               for (auto newline = buffer.find('\n'); newline != std::string::npos && !finished;
                    newline = buffer.find('\n')) {
                 const std::string line = trim(std::string_view(buffer).substr(0, newline));
                 buffer.erase(0, newline + 1);
                 std::string_view payload = line;
                 if (payload.starts_with("data: ")) {
                   payload.remove_prefix(6);
                 } else if (payload.starts_with("data:")) {
                   payload.remove_prefix(5);
                 }
                 if (payload.empty()) continue;
                 run.printed.emplace_back(payload);
                 run.arrived.push_back(std::chrono::steady_clock::now());
                 if (payload == "[DONE]") {
                   run.result = "ok";
                   finished = true;
                 } else if (payload == "[CANCELLED]") {
                   run.result = "Job was cancelled";
                   finished = true;
                 } else if (payload.starts_with("[ERROR]")) {
                   payload.remove_prefix(7);
                   if (payload.starts_with(' ')) payload.remove_prefix(1);
                   run.result = "Job failed: " + std::string(payload);
                   finished = true;
                 }
               }
               return !finished;
             });
  return run;
}

bool printed_line_starting(const RbeeRun& run, std::string_view prefix) {
  return std::any_of(run.printed.begin(), run.printed.end(),
                     [&](const std::string& line) { return line.starts_with(prefix); });
}

// No SSE machinery reaches rbee's printout: no ids, no comments.
void check_rbee_printout(const RbeeRun& run) {
  CHECK_FALSE(printed_line_starting(run, "id:"));
  CHECK_FALSE(printed_line_starting(run, ":"));
  CHECK(printed_line_starting(run, "\x1b[1mrbee_hive::"));  // the bold header of a narration
  for (const auto& line : run.printed) {
    if (line.starts_with("\x1b[1m")) continue;
    CHECK_MESSAGE(line.find('\x1b') == std::string::npos, line);  // ANSI only in headers
  }
}

}  // namespace

TEST_CASE(
    "rbee's JobClient runs model_list: narration lines, event: data with the models, [DONE]") {
  HiveUnderTest hive;
  const RbeeRun run =
      rbee_submit_and_stream(*hive.hive, {{"operation", "model_list"}, {"hive_id", "localhost"}});
  check_rbee_printout(run);
  CHECK(run.result == "ok");
  CHECK(run.printed.back() == "[DONE]");
  const auto data = std::find(run.printed.begin(), run.printed.end(), "event: data");
  REQUIRE(data != run.printed.end());
  REQUIRE(std::next(data) != run.printed.end());
  const json event = json::parse(*std::next(data));
  CHECK(event["action"] == "model_list");
  CHECK(event["payload"]["models"].is_array());
  CHECK(std::find(run.printed.begin(), run.printed.end(), "0 models in the catalog") !=
        run.printed.end());
}

TEST_CASE("rbee's JobClient runs model_download, model_get and model_delete") {
  HiveWithHub setup;
  setup.hub.add_repo(tiny_repo("org/tiny"));
  const auto& hive = *setup.hive.hive;
  const RbeeRun download =
      rbee_submit_and_stream(hive, {{"operation", "model_download"}, {"model", "org/tiny"}});
  check_rbee_printout(download);
  CHECK(download.result == "ok");
  CHECK(std::any_of(download.printed.begin(), download.printed.end(),
                    [](const std::string& line) { return line.starts_with("✅ "); }));

  const RbeeRun get =
      rbee_submit_and_stream(hive, {{"operation", "model_get"}, {"id", "org/tiny"}});
  CHECK(get.result == "ok");
  const auto data = std::find(get.printed.begin(), get.printed.end(), "event: data");
  REQUIRE(data != get.printed.end());
  const json model = json::parse(*std::next(data))["payload"]["model"];
  CHECK(model["name"] == "org/tiny");
  CHECK(model["size_bytes"].get<std::uint64_t>() == 613 + 4099 + 2 * 1024 * 1024 + 3);
  CHECK(model["loaded"] == false);
  CHECK(model["status"] == "ready");

  const RbeeRun removed =
      rbee_submit_and_stream(hive, {{"operation", "model_delete"}, {"id", "org/tiny"}});
  CHECK(removed.result == "ok");
  CHECK(rbee_submit_and_stream(hive, {{"operation", "model_get"}, {"id", "org/tiny"}})
            .result.starts_with("Job failed: model org/tiny is not in the catalog"));
}

TEST_CASE("an rbee operation this hive does not serve: 202, then Job failed: <what it serves>") {
  HiveUnderTest hive;
  for (const char* name : {"worker_spawn", "model_load", "infer"}) {
    CAPTURE(name);
    const RbeeRun run = rbee_submit_and_stream(
        *hive.hive, {{"operation", name}, {"hive_id", "localhost"}, {"model", "org/x"}});
    CHECK(run.result == std::string("Job failed: this hive does not serve the operation '") + name +
                            "'; it serves: model_download, model_list, model_get, " +
                            "model_delete, model_prune");
  }
  // Not a request at all keeps its 4xx and makes no job.
  const auto unknown = hive->submit({{"operation", "make_coffee"}});
  CHECK(unknown->status == 400);
  CHECK(hive->submit({{"operation", "model_get"}, {"id", "../etc"}})->status == 400);
}

TEST_CASE(
    "in rbee's profile a waiting job narrates every second, so the queen's timer never fires") {
  HiveUnderTest hive;
  ModelLockHolder held(hive.cache, "org", "held");
  std::thread release([&held] {
    std::this_thread::sleep_for(3500ms);
    held.release();
  });
  const RbeeRun run =
      rbee_submit_and_stream(*hive.hive, {{"operation", "model_delete"}, {"id", "org/held"}});
  release.join();
  check_rbee_printout(run);
  int waiting = 0;
  for (const auto& line : run.printed) waiting += line.starts_with("⏳ model_delete") ? 1 : 0;
  CHECK(waiting >= 2);
  for (std::size_t i = 1; i < run.arrived.size(); ++i) {
    CHECK(run.arrived[i] - run.arrived[i - 1] < 2s);  // queen-rbee ends a stream silent for 2 s
  }
}

TEST_CASE("a standard SSE client keeps the full stream: ids, JSON lines") {
  HiveUnderTest hive;
  const std::string job_id = hive->submit_job({{"operation", "model_list"}});
  const auto stream = watch(*hive.hive, job_id);  // sends Accept: text/event-stream
  REQUIRE_FALSE(stream.events().empty());
  CHECK(stream.events().front().id == 1u);
  CHECK(stream.events().front().json()["type"] == "narration");
}

TEST_CASE("in rbee's profile a download that narrates progress never says it is still running") {
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "org/paced";
  repo.files = {{"model.gguf", 6u << 20, true, 7}};
  hub.add_repo(repo);
  hub.set_rate_limit(1536u << 10);  // ~4 s on one connection, a progress line every second
  HiveUnderTest hive(
      {"--progress-interval-ms", "1000", "--connections", "1", "--disk-reserve-mb", "0"}, "",
      {{"HF_ENDPOINT", hub.endpoint()}});
  const RbeeRun run = rbee_submit_and_stream(
      *hive.hive,
      {{"operation", "model_download"}, {"hive_id", "localhost"}, {"model", "org/paced"}});
  check_rbee_printout(run);
  CHECK(run.printed.back() == "[DONE]");
  int progress = 0;
  for (std::size_t i = 0; i < run.printed.size(); ++i) {
    progress += run.printed[i].find("% complete (") != std::string::npos ? 1 : 0;
    // An idle line only after the stream was silent for the idle interval (was: one after
    // every progress line, a second after it). Measured between arrivals, not on the clock of
    // the whole download, so a slow machine's longer pauses do not count against it.
    // (Each narration is two printed lines, its header then its text: the event before this
    // one ended at i - 2.)
    if (run.printed[i].starts_with("⏳") && i >= 2) {
      CHECK(run.arrived[i] - run.arrived[i - 2] >= 1400ms);
    }
  }
  CHECK(progress >= 2);
}
