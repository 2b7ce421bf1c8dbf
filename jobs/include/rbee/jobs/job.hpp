#pragma once
// Job: one submitted operation, its state machine, its event log and its cancellation token.
//
//   queued ──▶ running ──▶ completed | failed | cancelled
//      └──────────────────────────────────────▶ cancelled

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "rbee/jobs/cancellation.hpp"
#include "rbee/jobs/event_log.hpp"
#include "rbee/jobs/operation.hpp"

namespace rbee::jobs {

enum class JobState { queued, running, completed, failed, cancelled };

std::string_view to_string(JobState state);
bool is_finished(JobState state);

// A consistent copy of a job's mutable fields.
struct JobStatus {
  JobState state = JobState::queued;
  std::int64_t created_at_ms = 0;
  std::optional<std::int64_t> started_at_ms;
  std::optional<std::int64_t> finished_at_ms;
  std::string error;       // set when failed
  std::string error_code;  // a stable snake_case kind of the failure, when the handler gave one
};

// Thread-safe. Every transition to a finished state also closes the event log with the
// matching terminal marker, so the log and the state never disagree.
class Job {
 public:
  Job(std::string id, Operation operation, std::size_t max_events = EventLog::kDefaultMaxEntries);

  const std::string& id() const { return id_; }
  const Operation& operation() const { return operation_; }
  std::string_view operation_name() const { return jobs::operation_name(operation_); }

  JobStatus status() const;
  EventLog& events() { return events_; }
  const EventLog& events() const { return events_; }
  const CancellationToken& cancellation() const { return cancellation_; }

  // queued → running; false when the job is no longer queued (it was cancelled meanwhile).
  bool start();
  // running → completed / failed / cancelled; false when the job had finished already.
  bool complete();
  bool fail(const std::string& error, const std::string& error_code = "");
  bool finish_cancelled();

  enum class CancelOutcome { cancelled, already_finished };
  // A queued job is cancelled at once; a running one gets its token cancelled and is finished
  // by its runner when the handler returns (promptly: handlers poll the token).
  CancelOutcome cancel();

 private:
  bool finish(JobState state, std::string terminal, const std::string& error,
              const std::string& error_code = "");
  bool finish_locked(JobState state, std::string terminal, const std::string& error);

  const std::string id_;
  const Operation operation_;
  mutable std::mutex mutex_;
  JobStatus status_;
  EventLog events_;
  CancellationToken cancellation_;
};

// "job-" followed by a random (version 4) UUID.
std::string make_job_id();

}  // namespace rbee::jobs
