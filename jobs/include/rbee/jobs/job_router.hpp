#pragma once
// JobRouter: runs each submitted job's handler, chosen by operation name, on a bounded pool.

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include <asio/thread_pool.hpp>
#include <nlohmann/json.hpp>
#include <rbee/narration/narrator.hpp>

#include "rbee/jobs/job.hpp"

namespace rbee::jobs {

// A failure a handler reports: `code` is a stable snake_case kind, what() the operator's
// sentence that ends the stream as "[ERROR] <what()>".
class JobError : public std::runtime_error {
 public:
  JobError(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// What a handler sees of its job. Valid for the duration of the handler call.
class JobContext {
 public:
  JobContext(Job& job, const narration::Narrator& narrator) : job_(job), narrator_(narrator) {}

  const std::string& job_id() const { return job_.id(); }
  const Operation& operation() const { return job_.operation(); }
  const CancellationToken& cancellation() const { return job_.cancellation(); }

  // Stamps the event with this job's id and emits it through the narrator.
  void narrate(narration::NarrationEvent event) const;
  void narrate(std::string actor, std::string action, std::string target, std::string human,
               narration::Level level = narration::Level::info) const;
  // Appends {"type":"data","action":…,"payload":…} to the job's stream.
  void emit_data(std::string_view action, nlohmann::json payload) const;
  // Outside text made fit for an event: secrets redacted, sanitised.
  std::string clean(std::string_view text) const { return narrator_.clean(text); }

 private:
  Job& job_;
  const narration::Narrator& narrator_;
};

// Throws JobError (or any exception) to fail the job; JobCancelled or returning after the
// token was cancelled ends it as cancelled; a normal return completes it.
using JobHandler = std::function<void(JobContext&)>;

// Which pool runs an operation. Quick operations (catalog reads, deletes) have threads of their
// own, so they answer in milliseconds however many long ones (downloads) run or wait queued.
// A download the mirror pulls through for a peer (`ModelDownload::pull_through`) runs on a
// pool of its own too: a peer waiting on the other end of an HTTP request must not wait
// behind this hive's own downloads.
enum class Lane { quick, long_running };

// Owns its worker threads: at most `max_concurrent_jobs` long-running handlers run at once,
// `kQuickThreads` quick ones and `kPullThroughThreads` pull-throughs; the rest wait queued,
// holding no thread. shutdown() (or the destructor) cancels nothing by itself: it waits for
// every job.
class JobRouter {
 public:
  static constexpr std::size_t kQuickThreads = 4;
  static constexpr std::size_t kPullThroughThreads = 4;
  JobRouter(const narration::Narrator& narrator, std::size_t max_concurrent_jobs);
  ~JobRouter();
  JobRouter(const JobRouter&) = delete;
  JobRouter& operator=(const JobRouter&) = delete;

  // Register before the first submit(); not thread-safe with submit().
  void route(std::string operation_name, JobHandler handler, Lane lane = Lane::quick);
  // Returns at once; the job runs on the pool. Keeps the job alive until it finishes.
  void submit(std::shared_ptr<Job> job);
  // Waits until every submitted job has finished, then stops the pool.
  void shutdown();

 private:
  struct Route {
    JobHandler handler;
    Lane lane;
  };
  void run(Job& job) const noexcept;
  void run_handler(Job& job) const;

  const narration::Narrator& narrator_;
  std::map<std::string, Route, std::less<>> routes_;
  asio::thread_pool quick_pool_;
  asio::thread_pool long_pool_;
  asio::thread_pool pull_through_pool_;
};

}  // namespace rbee::jobs
