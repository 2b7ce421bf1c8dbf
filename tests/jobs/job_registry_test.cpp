#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <rbee/jobs/job_registry.hpp>
#include <rbee/narration/narrator.hpp>

using namespace rbee::jobs;
using namespace std::chrono_literals;

TEST_CASE("the registry creates, finds and lists jobs in creation order") {
  JobRegistry registry;
  auto first = registry.create(ModelList{"h"});
  auto second = registry.create(ModelGet{"h", "o/n"});
  CHECK(registry.get(first->id()) == first);
  CHECK(registry.get("job-unknown") == nullptr);
  const auto all = registry.list();
  REQUIRE(all.size() == 2);
  CHECK(all[0] == first);
  CHECK(all[1] == second);
}

TEST_CASE("registry cancel distinguishes unknown, finished and cancelled") {
  JobRegistry registry;
  auto job = registry.create(ModelList{"h"});
  CHECK(registry.cancel("job-nope") == JobRegistry::CancelResult::not_found);
  CHECK(registry.cancel(job->id()) == JobRegistry::CancelResult::cancelled);
  CHECK(registry.cancel(job->id()) == JobRegistry::CancelResult::already_finished);
}

TEST_CASE("retention drops the oldest finished jobs beyond the count, never running ones") {
  JobRegistry registry(RetentionPolicy{2, std::chrono::hours(1)});
  auto running = registry.create(ModelList{"h"});
  running->start();
  std::vector<std::shared_ptr<Job>> finished;
  for (int i = 0; i < 4; ++i) {
    finished.push_back(registry.create(ModelList{"h"}));
    finished.back()->cancel();
  }
  registry.prune();
  CHECK(registry.get(running->id()) != nullptr);
  CHECK(registry.get(finished[0]->id()) == nullptr);
  CHECK(registry.get(finished[1]->id()) == nullptr);
  CHECK(registry.get(finished[2]->id()) != nullptr);
  CHECK(registry.get(finished[3]->id()) != nullptr);
}

TEST_CASE("retention drops finished jobs older than the age limit") {
  JobRegistry registry(RetentionPolicy{100, std::chrono::seconds(0)});
  auto job = registry.create(ModelList{"h"});
  job->cancel();
  std::this_thread::sleep_for(5ms);
  registry.prune();
  CHECK(registry.get(job->id()) == nullptr);
}

TEST_CASE("the job event sink appends narration of a job to that job's log only") {
  JobRegistry registry;
  rbee::narration::Narrator narrator;
  narrator.add_sink(make_job_event_sink(registry));
  auto job = registry.create(ModelList{"h"});
  auto other = registry.create(ModelList{"h"});
  narrator.emit({"hive", "hello", "t", "Hello", job->id(), rbee::narration::Level::info, 0, {}});
  narrator.emit({"hive", "global", "t", "No job", "", rbee::narration::Level::info, 0, {}});
  const auto batch = job->events().read_after(0, 0ms);
  REQUIRE(batch.entries.size() == 1);
  const auto json = nlohmann::json::parse(batch.entries[0].data);
  CHECK(json["action"] == "hello");
  CHECK(json["job_id"] == job->id());
  CHECK(other->events().last_seq() == 0);
}
