// End to end: SSE streams of running jobs (replay, resume, heartbeats, many watchers, cancel).

#include <atomic>
#include <latch>

#include <rbee/jobs/job_router.hpp>

#include "e2e/helpers.hpp"

using namespace rbee::testing;
using nlohmann::json;

TEST_CASE("a late subscriber gets the whole log replayed, identical to a live watcher's") {
  HiveUnderTest hive;
  ModelLockHolder held(hive.cache, "org", "held");
  const std::string job_id = start_blocked_job(*hive.hive, "org/held");
  SseStream live;
  std::thread watcher([&] { live = watch(*hive.hive, job_id); });
  held.release();
  watcher.join();
  CHECK(live.terminal().starts_with("[ERROR] model org/held is not in the catalog"));

  const SseStream late = watch(*hive.hive, job_id);
  CHECK(data_lines(late) == data_lines(live));
  CHECK(late.events().front().id == 1u);
}

TEST_CASE("Last-Event-ID resumes after that event") {
  HiveUnderTest hive;
  const std::string job_id = hive->submit_job({{"operation", "model_list"}});
  const auto all = watch(*hive.hive, job_id).events();
  REQUIRE(all.size() >= 3);
  const auto resumed = watch(*hive.hive, job_id, {{"Last-Event-ID", "2"}}).events();
  REQUIRE(resumed.size() == all.size() - 2);
  CHECK(resumed.front().id == 3u);
  CHECK(resumed.back().data == all.back().data);
  // Resuming after the terminal line: 204, which tells an EventSource to stop reconnecting.
  const auto none = watch(*hive.hive, job_id, {{"Last-Event-ID", std::to_string(all.size())}});
  CHECK(none.status == 204);
  CHECK(none.events().empty());
}

TEST_CASE("an idle stream carries ': ping' heartbeats") {
  HiveUnderTest hive({"--sse-heartbeat-ms", "50"});
  ModelLockHolder held(hive.cache, "org", "held");
  const std::string job_id = start_blocked_job(*hive.hive, "org/held");
  int pings = 0;
  const SseStream stream = watch(*hive.hive, job_id, {}, [&](const SseMessage& message) {
    if (message.is_comment() && message.comment == "ping") ++pings;
    return pings < 2;
  });
  CHECK(pings == 2);
  CHECK(stream.terminal().empty());  // the job is still running: the stream did not end
}

TEST_CASE("100 concurrent watchers all get every event while /health answers") {
  HiveUnderTest hive;
  ModelLockHolder held(hive.cache, "org", "held");
  const std::string job_id = start_blocked_job(*hive.hive, "org/held");

  constexpr int kWatchers = 100;
  std::vector<SseStream> streams(kWatchers);
  std::latch connected(kWatchers);
  std::vector<std::thread> watchers;
  for (int i = 0; i < kWatchers; ++i) {
    watchers.emplace_back([&, i] {
      bool counted = false;
      streams[i] = watch(*hive.hive, job_id, {}, [&](const SseMessage&) {
        if (!counted) connected.count_down();
        counted = true;
        return true;
      });
      if (!counted) connected.count_down();  // never got an event: fail below, don't hang
    });
  }
  connected.wait();
  // Every watcher holds a connection now; the control plane must still answer.
  auto health = hive->client()->Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(get_json(*hive.hive, "/v1/jobs/" + job_id)["state"] == "running");

  held.release();
  for (auto& watcher : watchers) watcher.join();
  const auto reference = data_lines(streams.front());
  REQUIRE(reference.size() >= 4);
  CHECK(reference.back().starts_with("[ERROR]"));
  int complete = 0;
  for (const auto& stream : streams) complete += data_lines(stream) == reference ? 1 : 0;
  CHECK(complete == kWatchers);
}

TEST_CASE("a watcher that disconnects does not cancel the job") {
  HiveUnderTest hive;
  ModelLockHolder held(hive.cache, "org", "held");
  const std::string job_id = start_blocked_job(*hive.hive, "org/held");
  const SseStream gone = watch(*hive.hive, job_id, {}, [](const SseMessage&) { return false; });
  CHECK_FALSE(gone.events().empty());
  CHECK(gone.terminal().empty());
  CHECK(get_json(*hive.hive, "/v1/jobs/" + job_id)["state"] == "running");
  held.release();
  CHECK(watch(*hive.hive, job_id).terminal().starts_with("[ERROR] model org/held"));
  CHECK(get_json(*hive.hive, "/v1/jobs/" + job_id)["state"] == "failed");
}

TEST_CASE("DELETE cancels a running job promptly, its stream ends with [CANCELLED]") {
  HiveUnderTest hive;
  ModelLockHolder held(hive.cache, "org", "held");
  const std::string job_id = start_blocked_job(*hive.hive, "org/held");
  SseStream stream;
  std::latch watching(1);
  std::thread watcher([&] {
    bool first = true;
    stream = watch(*hive.hive, job_id, {}, [&](const SseMessage&) {
      if (first) watching.count_down();
      first = false;
      return true;
    });
  });
  watching.wait();
  auto res = hive->client()->Delete("/v1/jobs/" + job_id);
  REQUIRE(res);
  CHECK(res->status == 200);
  const json body = json::parse(res->body);
  CHECK(body["job_id"] == job_id);
  CHECK(body["status"] == "cancelled");
  watcher.join();  // the lock is still held: only cancellation can have ended the stream
  CHECK(stream.terminal() == "[CANCELLED]");
  CHECK(get_json(*hive.hive, "/v1/jobs/" + job_id)["state"] == "cancelled");

  auto again = hive->client()->Delete("/v1/jobs/" + job_id);
  REQUIRE(again);
  CHECK(again->status == 409);
  CHECK(json::parse(again->body)["error"]["code"] == "job_finished");
}

TEST_CASE("a queued job can be cancelled before it runs") {
  HiveUnderTest hive;
  // Every thread of the quick lane waits for a held model's catalog lock (one model each: a
  // delete holds its model's download lock too).
  std::vector<std::unique_ptr<ModelLockHolder>> held;
  std::vector<std::string> running;
  for (std::size_t i = 0; i < rbee::jobs::JobRouter::kQuickThreads; ++i) {
    const std::string name = "held" + std::to_string(i);
    held.push_back(std::make_unique<ModelLockHolder>(hive.cache, "org", name));
    running.push_back(start_blocked_job(*hive.hive, "org/" + name));
  }
  const std::string queued = hive->submit_job({{"operation", "model_list"}});
  CHECK(get_json(*hive.hive, "/v1/jobs/" + queued)["state"] == "queued");
  CHECK(hive->client()->Delete("/v1/jobs/" + queued)->status == 200);
  const SseStream stream = watch(*hive.hive, queued);
  CHECK(data_lines(stream) == std::vector<std::string>{"[CANCELLED]"});
  for (auto& holder : held) holder->release();
  for (const auto& job : running) CHECK(wait_for_state(*hive.hive, job, "failed") == "failed");
}
