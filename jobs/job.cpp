#include "rbee/jobs/job.hpp"

#include <random>

#include <fmt/format.h>
#include <rbee/narration/event.hpp>

namespace rbee::jobs {

std::string_view to_string(JobState state) {
  switch (state) {
    case JobState::queued:
      return "queued";
    case JobState::running:
      return "running";
    case JobState::completed:
      return "completed";
    case JobState::failed:
      return "failed";
    case JobState::cancelled:
      return "cancelled";
  }
  return "unknown";
}

bool is_finished(JobState state) {
  return state == JobState::completed || state == JobState::failed || state == JobState::cancelled;
}

Job::Job(std::string id, Operation operation, std::size_t max_events)
    : id_(std::move(id)), operation_(std::move(operation)), events_(max_events) {
  status_.created_at_ms = narration::now_unix_ms();
}

JobStatus Job::status() const {
  std::lock_guard lock(mutex_);
  return status_;
}

bool Job::start() {
  std::lock_guard lock(mutex_);
  if (status_.state != JobState::queued) return false;
  status_.state = JobState::running;
  status_.started_at_ms = narration::now_unix_ms();
  return true;
}

bool Job::finish(JobState state, std::string terminal, const std::string& error,
                 const std::string& error_code) {
  std::lock_guard lock(mutex_);
  if (!finish_locked(state, std::move(terminal), error)) return false;
  status_.error_code = error_code;
  return true;
}

bool Job::finish_locked(JobState state, std::string terminal, const std::string& error) {
  if (is_finished(status_.state)) return false;
  status_.state = state;
  status_.finished_at_ms = narration::now_unix_ms();
  status_.error = error;
  // Closed under the job's lock: a reader that sees a finished state finds the marker too.
  events_.close(std::move(terminal));
  return true;
}

bool Job::complete() {
  return finish(JobState::completed, std::string(kDoneMarker), "");
}

bool Job::fail(const std::string& error, const std::string& error_code) {
  return finish(JobState::failed, error_marker(error), error, error_code);
}

bool Job::finish_cancelled() {
  return finish(JobState::cancelled, std::string(kCancelledMarker), "");
}

Job::CancelOutcome Job::cancel() {
  std::lock_guard lock(mutex_);
  if (is_finished(status_.state)) return CancelOutcome::already_finished;
  cancellation_.cancel();
  // A queued job has no runner yet to notice the token, so it ends here (and start() will
  // refuse it). A running one is ended by its runner once the handler sees the token.
  if (status_.state == JobState::queued) {
    finish_locked(JobState::cancelled, std::string(kCancelledMarker), "");
  }
  return CancelOutcome::cancelled;
}

std::string make_job_id() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  std::uniform_int_distribution<std::uint64_t> bits;
  std::uint64_t high = bits(engine);
  std::uint64_t low = bits(engine);
  high = (high & ~0xF000ULL) | 0x4000ULL;            // version 4
  low = (low & ~(0xC0ULL << 56)) | (0x80ULL << 56);  // RFC 4122 variant
  return fmt::format("job-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", high >> 32, (high >> 16) & 0xFFFF,
                     high & 0xFFFF, low >> 48, low & 0xFFFFFFFFFFFFULL);
}

}  // namespace rbee::jobs
