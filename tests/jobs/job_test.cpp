#include <doctest/doctest.h>
#include <rbee/jobs/job.hpp>

#include <regex>

using namespace rbee::jobs;
using namespace std::chrono_literals;

namespace {
Job make_job() {
  return Job(make_job_id(), ModelList{"localhost"});
}
std::string last_line(const Job& job) {
  return job.events().read_after(0, 0ms).entries.back().data;
}
}  // namespace

TEST_CASE("job ids are job- followed by a version 4 UUID, and differ") {
  const std::regex uuid4("job-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  const std::string a = make_job_id();
  CHECK(std::regex_match(a, uuid4));
  CHECK(a != make_job_id());
}

TEST_CASE("a job runs from queued to completed with timestamps and [DONE]") {
  Job job = make_job();
  CHECK(job.status().state == JobState::queued);
  CHECK_FALSE(job.status().started_at_ms);
  REQUIRE(job.start());
  CHECK(job.status().state == JobState::running);
  CHECK(job.status().started_at_ms);
  CHECK_FALSE(job.start());
  REQUIRE(job.complete());
  const auto status = job.status();
  CHECK(status.state == JobState::completed);
  CHECK(status.finished_at_ms >= status.started_at_ms);
  CHECK(last_line(job) == "[DONE]");
}

TEST_CASE("a failed job keeps its error and ends its log with [ERROR] <reason>") {
  Job job = make_job();
  job.start();
  REQUIRE(job.fail("disk full"));
  CHECK(job.status().state == JobState::failed);
  CHECK(job.status().error == "disk full");
  CHECK(last_line(job) == "[ERROR] disk full");
  CHECK_FALSE(job.complete());  // a finished job stays as it ended
  CHECK(job.status().state == JobState::failed);
}

TEST_CASE("cancelling a queued job ends it at once and it never starts") {
  Job job = make_job();
  CHECK(job.cancel() == Job::CancelOutcome::cancelled);
  CHECK(job.status().state == JobState::cancelled);
  CHECK(job.cancellation().cancelled());
  CHECK(last_line(job) == "[CANCELLED]");
  CHECK_FALSE(job.start());
}

TEST_CASE("cancelling a running job signals its token, the runner finishes it") {
  Job job = make_job();
  job.start();
  CHECK(job.cancel() == Job::CancelOutcome::cancelled);
  CHECK(job.status().state == JobState::running);
  CHECK(job.cancellation().cancelled());
  REQUIRE(job.finish_cancelled());
  CHECK(last_line(job) == "[CANCELLED]");
}

TEST_CASE("cancelling a finished job reports it") {
  Job job = make_job();
  job.start();
  job.complete();
  CHECK(job.cancel() == Job::CancelOutcome::already_finished);
  CHECK_FALSE(job.cancellation().cancelled());
}

TEST_CASE("a cancellation token wakes a waiting wait_for promptly") {
  CancellationToken token;
  CHECK(token.wait_for(5ms));  // not cancelled: the full wait elapses
  std::thread canceller([&] { token.cancel(); });
  CHECK_FALSE(token.wait_for(60s));  // returns as soon as the token is cancelled
  canceller.join();
  CHECK_THROWS_AS(token.throw_if_cancelled(), JobCancelled);
}
