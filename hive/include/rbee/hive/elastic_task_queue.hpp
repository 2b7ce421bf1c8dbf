#pragma once
// ElasticTaskQueue: the HTTP server's thread pool. Each keep-alive connection and each SSE
// watcher holds a thread for its lifetime, so a fixed pool of 8 (cpp-httplib's default) starves
// every other request; this one grows to a cap as connections arrive and keeps idle threads.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>

namespace rbee::hive {

// Owns its threads; shutdown() (called by the server when it stops) runs what is queued and
// joins every thread.
class ElasticTaskQueue : public httplib::TaskQueue {
 public:
  explicit ElasticTaskQueue(std::size_t max_threads);
  ~ElasticTaskQueue() override;

  void enqueue(std::function<void()> task) override;
  void shutdown() override;

 private:
  void work();

  const std::size_t max_threads_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;
  bool stopping_ = false;
};

}  // namespace rbee::hive
