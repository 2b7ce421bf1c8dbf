#include "rbee/jobs/job_registry.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <rbee/narration/sanitize.hpp>

namespace rbee::jobs {

JobRegistry::JobRegistry(RetentionPolicy policy) : policy_(policy) {}

std::shared_ptr<Job> JobRegistry::create(Operation operation) {
  prune();
  auto job = std::make_shared<Job>(make_job_id(), std::move(operation), policy_.max_events_per_job);
  std::lock_guard lock(mutex_);
  jobs_.push_back(job);
  by_id_.emplace(job->id(), job);
  return job;
}

std::shared_ptr<Job> JobRegistry::get(std::string_view id) const {
  std::lock_guard lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Job>> JobRegistry::list() const {
  std::lock_guard lock(mutex_);
  return jobs_;
}

std::size_t JobRegistry::unfinished() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::size_t>(std::count_if(jobs_.begin(), jobs_.end(), [](const auto& job) {
    return !is_finished(job->status().state);
  }));
}

JobRegistry::CancelResult JobRegistry::cancel(std::string_view id) {
  auto job = get(id);
  if (!job) return CancelResult::not_found;
  return job->cancel() == Job::CancelOutcome::cancelled ? CancelResult::cancelled
                                                        : CancelResult::already_finished;
}

void JobRegistry::cancel_all() {
  for (const auto& job : list()) job->cancel();
}

void JobRegistry::prune() {
  const auto now_ms = narration::now_unix_ms();
  const auto max_age_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(policy_.max_finished_age).count();
  std::lock_guard lock(mutex_);
  std::size_t finished = 0;
  for (const auto& job : jobs_) finished += is_finished(job->status().state) ? 1 : 0;

  // Oldest first: drop finished jobs that are too old, or too many.
  std::erase_if(jobs_, [&](const std::shared_ptr<Job>& job) {
    const JobStatus status = job->status();
    if (!is_finished(status.state)) return false;
    const bool too_old = now_ms - status.finished_at_ms.value_or(now_ms) > max_age_ms;
    if (!too_old && finished <= policy_.max_finished_jobs) return false;
    --finished;
    by_id_.erase(job->id());
    return true;
  });
}

namespace {

constexpr std::string_view kProgressAction = "download_progress";

class JobEventSink : public narration::Sink {
 public:
  explicit JobEventSink(const JobRegistry& registry) : registry_(registry) {}
  void consume(const narration::NarrationEvent& event) override {
    if (event.job_id.empty()) return;
    if (auto job = registry_.get(event.job_id)) {
      // A progress report only matters until the next one: a day-long download keeps one.
      const auto retention =
          event.action == kProgressAction ? Retention::superseded : Retention::kept;
      job->events().append(narration::dump_json(narration::to_json(event)), retention);
    }
  }

 private:
  const JobRegistry& registry_;
};

}  // namespace

std::shared_ptr<narration::Sink> make_job_event_sink(const JobRegistry& registry) {
  return std::make_shared<JobEventSink>(registry);
}

}  // namespace rbee::jobs
