#include <doctest/doctest.h>
#include <rbee/hive/elastic_task_queue.hpp>

#include <atomic>
#include <latch>

using rbee::hive::ElasticTaskQueue;

TEST_CASE("long-lived tasks each get a thread, so later tasks still run") {
  // Like 50 SSE watchers holding their connections while /health must still be served.
  ElasticTaskQueue queue(64);
  std::latch release(1);
  std::latch all_holding(50);
  for (int i = 0; i < 50; ++i) {
    queue.enqueue([&] {
      all_holding.count_down();
      release.wait();
    });
  }
  all_holding.wait();  // would hang if the queue had fewer than 50 threads
  std::latch quick(1);
  queue.enqueue([&] { quick.count_down(); });
  quick.wait();
  release.count_down();
  queue.shutdown();
}

TEST_CASE("at the cap, tasks wait for a free thread instead of being lost") {
  ElasticTaskQueue queue(2);
  std::atomic<int> done{0};
  for (int i = 0; i < 100; ++i) queue.enqueue([&] { ++done; });
  queue.shutdown();  // runs what is queued, then joins
  CHECK(done.load() == 100);
}
