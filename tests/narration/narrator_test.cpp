#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <rbee/narration/log_sink.hpp>
#include <rbee/narration/narrator.hpp>

#include <mutex>
#include <vector>

using namespace rbee::narration;

namespace {

struct RecordingSink : Sink {
  std::mutex mutex;
  std::vector<NarrationEvent> events;
  void consume(const NarrationEvent& event) override {
    std::lock_guard lock(mutex);
    events.push_back(event);
  }
};

}  // namespace

TEST_CASE("narrator stamps, redacts and fans out to every sink") {
  Narrator narrator;
  narrator.redactor().add_secret("tok-123456");
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  narrator.add_sink(first);
  narrator.add_sink(second);

  NarrationEvent event{
      "hive",
      "auth",
      "target tok-123456",
      "used tok-123456",
      "job-1",
      Level::warn,
      0,
      Progress{"file-tok-123456", 1, 2, 3.0, std::nullopt, 1, 2, {{"b-tok-123456", 1, 2}}}};
  narrator.emit(event);

  REQUIRE(first->events.size() == 1);
  REQUIRE(second->events.size() == 1);
  const NarrationEvent& seen = first->events.front();
  CHECK(seen.emitted_at_ms > 0);
  CHECK(seen.human == "used [REDACTED]");
  CHECK(seen.target == "target [REDACTED]");
  CHECK(seen.progress->file == "file-[REDACTED]");
  CHECK(seen.progress->in_flight.at(0).file == "b-[REDACTED]");
}

TEST_CASE("event JSON has the SSE fields and flat progress") {
  NarrationEvent event{
      "provisioner",
      "download_progress",
      "org/m",
      "50%",
      "job-1",
      Level::info,
      42,
      Progress{"a.bin", 5, 10, 2.5, 2.0, 50, 100, {{"a.bin", 5, 10}, {"b.bin", 7, 9}}}};
  const auto json = to_json(event);
  CHECK(json["type"] == "narration");
  CHECK(json["actor"] == "provisioner");
  CHECK(json["level"] == "info");
  CHECK(json["emitted_at_ms"] == 42);
  CHECK(json["file"] == "a.bin");
  CHECK(json["bytes_done"] == 5);
  CHECK(json["bytes_total"] == 10);
  CHECK(json["eta_s"] == 2.0);
  CHECK(json["files"].size() == 2);
  CHECK(json["files"][1] ==
        nlohmann::json{{"file", "b.bin"}, {"bytes_done", 7}, {"bytes_total", 9}});

  event.progress.reset();
  CHECK_FALSE(to_json(event).contains("bytes_done"));
}

TEST_CASE("log line carries timestamp, level, actor, action and job id") {
  NarrationEvent event{"hive",  "job_started", "model_list",  "Started",
                       "job-9", Level::error,  1795383181260, std::nullopt};
  const std::string line = LogSink::format_line(event);
  CHECK(line.starts_with("2026-11-22T"));
  CHECK(line.find("ERROR") != std::string::npos);
  CHECK(line.find("hive job_started job=job-9 model_list: Started") != std::string::npos);
}

TEST_CASE("log levels parse and refuse unknown names") {
  CHECK(parse_level("warn") == Level::warn);
  CHECK_THROWS_AS(parse_level("loud"), std::invalid_argument);
}
