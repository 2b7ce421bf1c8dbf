#include <doctest/doctest.h>
#include <rbee/jobs/event_log.hpp>

#include <atomic>
#include <thread>
#include <vector>

using namespace rbee::jobs;
using namespace std::chrono_literals;

TEST_CASE("entries are numbered from 1 and replay from any position") {
  EventLog log;
  CHECK(log.append("a") == 1);
  CHECK(log.append("b") == 2);
  CHECK(log.append("c") == 3);
  auto all = log.read_after(0, 0ms);
  REQUIRE(all.entries.size() == 3);
  CHECK(all.entries[0].data == "a");
  CHECK_FALSE(all.finished);
  auto tail = log.read_after(2, 0ms);
  REQUIRE(tail.entries.size() == 1);
  CHECK(tail.entries[0].seq == 3);
}

TEST_CASE("the first close appends the only terminal line, later writes are dropped") {
  EventLog log;
  log.append("a");
  CHECK(log.close("[DONE]"));
  CHECK_FALSE(log.close("[ERROR] late"));
  CHECK(log.append("late") == 0);
  auto batch = log.read_after(0, 0ms);
  REQUIRE(batch.entries.size() == 2);
  CHECK(batch.entries.back().data == "[DONE]");
  CHECK(batch.finished);
  CHECK(log.read_after(2, 0ms).entries.empty());
}

TEST_CASE("a waiting reader wakes on append and times out without one") {
  EventLog log;
  CHECK(log.read_after(0, 20ms).entries.empty());
  std::thread writer([&] {
    std::this_thread::sleep_for(20ms);
    log.append("x");
  });
  auto batch = log.read_after(0, 10s);
  writer.join();
  REQUIRE(batch.entries.size() == 1);
  CHECK(batch.entries[0].data == "x");
}

TEST_CASE("concurrent readers each see every entry in order") {
  EventLog log;
  constexpr int kEntries = 2000;
  constexpr int kReaders = 8;
  std::vector<std::vector<std::string>> seen(kReaders);
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      std::uint64_t cursor = 0;
      for (;;) {
        auto batch = log.read_after(cursor, 5s);
        for (auto& entry : batch.entries) {
          CHECK(entry.seq == cursor + 1);
          cursor = entry.seq;
          seen[r].push_back(entry.data);
        }
        if (batch.finished) return;
      }
    });
  }
  for (int i = 0; i < kEntries; ++i) log.append(std::to_string(i));
  log.close("[DONE]");
  for (auto& reader : readers) reader.join();
  for (const auto& entries : seen) {
    REQUIRE(entries.size() == kEntries + 1);
    CHECK(entries[1234] == "1234");
    CHECK(entries.back() == "[DONE]");
  }
}

TEST_CASE("an error marker stays on one line") {
  CHECK(error_marker("bad\nthing\r") == "[ERROR] bad thing ");
}

TEST_CASE("progress entries are compacted to the latest; sequence numbers keep increasing") {
  EventLog log;
  log.append("started");
  for (int i = 0; i < 100; ++i) log.append("progress " + std::to_string(i), Retention::superseded);
  log.append("file done");
  log.append("progress 100", Retention::superseded);
  const auto all = log.read_after(0, 0ms).entries;
  REQUIRE(all.size() == 3);
  CHECK(all[0].data == "started");
  CHECK(all[1].data == "file done");
  CHECK(all[2].data == "progress 100");
  CHECK(all[2].seq == 103);
  CHECK(log.last_seq() == 103);
  // A watcher that saw progress 50 (seq 52) resumes with what is still held after it.
  const auto resumed = log.read_after(52, 0ms).entries;
  REQUIRE(resumed.size() == 2);
  CHECK(resumed[0].data == "file done");
}

TEST_CASE("beyond its cap the log drops its oldest entries, never the terminal line") {
  EventLog log(16);
  for (int i = 0; i < 1000; ++i) log.append("event " + std::to_string(i));
  CHECK(log.size() == 16);
  CHECK(log.close("[DONE]"));
  const auto all = log.read_after(0, 0ms);
  CHECK(all.entries.size() == 17);
  CHECK(all.entries.front().data == "event 984");
  CHECK(all.entries.back().data == "[DONE]");
  CHECK(all.entries.back().seq == 1001);
  CHECK(all.finished);
}

TEST_CASE("is_terminal: only the terminal entry's id, and only once the log is closed") {
  EventLog log;
  log.append("a");
  log.append("b");
  CHECK_FALSE(log.is_terminal(2));  // the last event, but the job has not ended
  log.close(std::string(kDoneMarker));
  CHECK_FALSE(log.is_terminal(2));  // a reader that saw 2 has not seen [DONE] (3)
  CHECK(log.is_terminal(3));
}

TEST_CASE("is_terminal never says a reader saw the end while the log closes beside it") {
  // The reconnect check once read last_seq() and closed() apart: a close between them made the
  // last event before the end look like the end. One look under one lock cannot.
  for (int round = 0; round < 200; ++round) {
    EventLog log;
    log.append("a");
    std::atomic<bool> wrong{false};
    std::thread closer([&] { log.close(std::string(kDoneMarker)); });
    for (int i = 0; i < 50; ++i) {
      if (log.is_terminal(1)) wrong = true;
    }
    closer.join();
    CHECK_FALSE(wrong.load());
    CHECK(log.is_terminal(2));
  }
}
