#pragma once
// JobRegistry: every job the hive knows, by id, with bounded retention of finished jobs.

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <rbee/narration/narrator.hpp>

#include "rbee/jobs/job.hpp"

namespace rbee::jobs {

struct RetentionPolicy {
  std::size_t max_finished_jobs = 1000;  // the oldest finished jobs beyond this are dropped
  std::chrono::seconds max_finished_age{std::chrono::hours(1)};
  std::size_t max_events_per_job = EventLog::kDefaultMaxEntries;  // progress compacted first
};

// Thread-safe. Pruning happens on create(), so retention needs no thread of its own;
// a dropped job lives on while someone (an SSE stream) still holds its shared_ptr.
class JobRegistry {
 public:
  explicit JobRegistry(RetentionPolicy policy = {});

  std::shared_ptr<Job> create(Operation operation);
  std::shared_ptr<Job> get(std::string_view id) const;  // nullptr when unknown
  std::vector<std::shared_ptr<Job>> list() const;       // oldest first
  std::size_t unfinished() const;                       // queued or running

  enum class CancelResult { cancelled, not_found, already_finished };
  CancelResult cancel(std::string_view id);
  void cancel_all();

  void prune();

 private:
  RetentionPolicy policy_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Job>> jobs_;  // creation order
  std::map<std::string, std::shared_ptr<Job>, std::less<>> by_id_;
};

// The per-job narration sink: appends each event that carries a job_id to that job's log as
// its SSE JSON line. Events of unknown or finished jobs are dropped (the log is closed).
std::shared_ptr<narration::Sink> make_job_event_sink(const JobRegistry& registry);

}  // namespace rbee::jobs
