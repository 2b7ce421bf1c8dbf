#include <doctest/doctest.h>
#include <rbee/jobs/job_registry.hpp>
#include <rbee/jobs/job_router.hpp>

#include <atomic>
#include <latch>

using namespace rbee::jobs;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  rbee::narration::Narrator narrator;
  JobRegistry registry;
  Fixture() { narrator.add_sink(make_job_event_sink(registry)); }

  std::vector<std::string> lines(const Job& job) {
    std::vector<std::string> result;
    for (auto& entry : job.events().read_after(0, 0ms).entries) result.push_back(entry.data);
    return result;
  }
  JobState wait_finished(const std::shared_ptr<Job>& job) {
    for (std::uint64_t seen = 0;;) {
      auto batch = job->events().read_after(seen, 10s);
      seen += batch.entries.size();
      if (batch.finished) return job->status().state;
    }
  }
};

}  // namespace

TEST_CASE("a handler that returns completes its job, data and narration reach the stream") {
  Fixture f;
  JobRouter router(f.narrator, 2);
  router.route("model_list", [](JobContext& context) {
    context.narrate("hive", "model_list", "catalog", "listing");
    context.emit_data("model_list", {{"models", nlohmann::json::array()}});
  });
  auto job = f.registry.create(ModelList{"h"});
  router.submit(job);
  CHECK(f.wait_finished(job) == JobState::completed);
  const auto lines = f.lines(*job);
  REQUIRE(lines.size() == 5);  // started, narration, data, completed, [DONE]
  CHECK(nlohmann::json::parse(lines[2])["type"] == "data");
  CHECK(nlohmann::json::parse(lines[2])["action"] == "model_list");
  CHECK(lines.back() == "[DONE]");
}

TEST_CASE("a handler error fails the job with its message, redacted") {
  Fixture f;
  f.narrator.redactor().add_secret("hf_secret_token_1");
  JobRouter router(f.narrator, 1);
  router.route("model_list",
               [](JobContext&) { throw JobError("boom", "failed with token hf_secret_token_1"); });
  auto job = f.registry.create(ModelList{"h"});
  router.submit(job);
  CHECK(f.wait_finished(job) == JobState::failed);
  CHECK(job->status().error == "failed with token [REDACTED]");
  CHECK(f.lines(*job).back() == "[ERROR] failed with token [REDACTED]");
}

TEST_CASE("an operation without a handler fails clearly") {
  Fixture f;
  JobRouter router(f.narrator, 1);
  auto job = f.registry.create(ModelGet{"h", "o/n"});
  router.submit(job);
  CHECK(f.wait_finished(job) == JobState::failed);
  CHECK(job->status().error.find("model_get") != std::string::npos);
}

TEST_CASE("cancelling a running job stops its handler promptly and ends it [CANCELLED]") {
  Fixture f;
  JobRouter router(f.narrator, 1);
  std::latch started(1);
  router.route("model_list", [&](JobContext& context) {
    started.count_down();
    while (context.cancellation().wait_for(10s)) {
    }
    context.cancellation().throw_if_cancelled();
  });
  auto job = f.registry.create(ModelList{"h"});
  router.submit(job);
  started.wait();
  CHECK(f.registry.cancel(job->id()) == JobRegistry::CancelResult::cancelled);
  CHECK(f.wait_finished(job) == JobState::cancelled);
  CHECK(f.lines(*job).back() == "[CANCELLED]");
}

TEST_CASE("at most max_concurrent_jobs long-running handlers run at once, the rest stay queued") {
  Fixture f;
  JobRouter router(f.narrator, 2);
  std::atomic<int> running{0};
  std::atomic<int> peak{0};
  std::latch release(1);
  router.route(
      "model_download",
      [&](JobContext&) {
        const int now = ++running;
        for (int seen = peak.load(); now > seen && !peak.compare_exchange_weak(seen, now);) {
        }
        release.wait();
        --running;
      },
      Lane::long_running);
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 5; ++i) {
    jobs.push_back(f.registry.create(ModelDownload{"h", "org/m"}));
    router.submit(jobs.back());
  }
  while (running.load() < 2) std::this_thread::sleep_for(1ms);
  int queued = 0;
  for (auto& job : jobs) queued += job->status().state == JobState::queued ? 1 : 0;
  CHECK(queued == 3);
  release.count_down();
  for (auto& job : jobs) CHECK(f.wait_finished(job) == JobState::completed);
  CHECK(peak.load() == 2);
}

TEST_CASE("quick operations run while every long-running slot is taken and more wait queued") {
  Fixture f;
  JobRouter router(f.narrator, 1);
  std::latch release(1);
  router.route(
      "model_download", [&](JobContext&) { release.wait(); }, Lane::long_running);
  router.route("model_list", [](JobContext&) {});
  std::vector<std::shared_ptr<Job>> downloads;
  for (int i = 0; i < 3; ++i) {
    downloads.push_back(f.registry.create(ModelDownload{"h", "org/m"}));
    router.submit(downloads.back());
  }
  auto list = f.registry.create(ModelList{"h"});
  router.submit(list);
  CHECK(f.wait_finished(list) == JobState::completed);
  CHECK(downloads.back()->status().state == JobState::queued);
  release.count_down();
  for (auto& job : downloads) CHECK(f.wait_finished(job) == JobState::completed);
}
