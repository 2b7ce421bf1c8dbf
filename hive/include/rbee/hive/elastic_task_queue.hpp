#pragma once
// ElasticTaskQueue: the HTTP server's worker threads. A connection being served holds one (an
// SSE watcher for its lifetime; an idle keep-alive connection goes back to GuardedServer's
// epoll loop), so a fixed pool starves every other request; this one grows to a cap as
// connections need it and keeps idle threads.

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
