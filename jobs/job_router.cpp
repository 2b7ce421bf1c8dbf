#include "rbee/jobs/job_router.hpp"

#include <fmt/format.h>
#include <asio/post.hpp>
#include <rbee/narration/sanitize.hpp>

namespace rbee::jobs {

using narration::Level;
using narration::NarrationEvent;

void JobContext::narrate(NarrationEvent event) const {
  event.job_id = job_.id();
  narrator_.emit(std::move(event));
}

void JobContext::narrate(std::string actor, std::string action, std::string target,
                         std::string human, Level level) const {
  narrate(NarrationEvent{std::move(actor), std::move(action), std::move(target), std::move(human),
                         job_.id(), level, 0, std::nullopt});
}

void JobContext::emit_data(std::string_view action, nlohmann::json payload) const {
  nlohmann::json line = {{"type", "data"}, {"action", action}, {"payload", std::move(payload)}};
  job_.events().append(narration::dump_json(line));
}

JobRouter::JobRouter(const narration::Narrator& narrator, std::size_t max_concurrent_jobs)
    : narrator_(narrator),
      quick_pool_(kQuickThreads),
      long_pool_(max_concurrent_jobs == 0 ? 1 : max_concurrent_jobs),
      pull_through_pool_(kPullThroughThreads) {}

JobRouter::~JobRouter() {
  shutdown();
}

namespace {

void fail(const JobContext& context, Job& job, const std::string& reason,
          const std::string& code = "") {
  const std::string name(job.operation_name());
  context.narrate("hive", "job_failed", name, fmt::format("{} failed: {}", name, reason),
                  Level::error);
  job.fail(reason, code);
}

}  // namespace

void JobRouter::route(std::string operation_name, JobHandler handler, Lane lane) {
  routes_.insert_or_assign(std::move(operation_name), Route{std::move(handler), lane});
}

void JobRouter::submit(std::shared_ptr<Job> job) {
  const auto found = routes_.find(job->operation_name());
  const bool long_running = found != routes_.end() && found->second.lane == Lane::long_running;
  const auto* download = std::get_if<ModelDownload>(&job->operation());
  auto& pool = !long_running                        ? quick_pool_
               : download && download->pull_through ? pull_through_pool_
                                                    : long_pool_;
  asio::post(pool, [this, job = std::move(job)] { run(*job); });
}

void JobRouter::shutdown() {
  quick_pool_.join();
  long_pool_.join();
  pull_through_pool_.join();
}

// The boundary of every job: nothing a handler throws, of any type, leaves this function
// (an exception escaping a pool thread would end the daemon).
void JobRouter::run(Job& job) const noexcept {
  try {
    run_handler(job);
  } catch (...) {
    job.fail("the hive failed while running this job");
  }
}

void JobRouter::run_handler(Job& job) const {
  if (!job.start()) return;  // cancelled while queued: already finished with [CANCELLED]
  JobContext context(job, narrator_);
  const std::string name(job.operation_name());
  context.narrate("hive", "job_started", name, fmt::format("Started {}", name));

  auto end_cancelled = [&] {
    context.narrate("hive", "job_cancelled", name, fmt::format("Cancelled {}", name), Level::warn);
    job.finish_cancelled();
  };
  auto route = routes_.find(name);
  try {
    if (std::holds_alternative<UnservedOperation>(job.operation())) {
      throw JobError("unsupported_operation", unserved_message(name));
    }
    if (route == routes_.end()) {
      throw JobError("no_handler", fmt::format("no handler is registered for '{}'", name));
    }
    route->second.handler(context);
    job.cancellation().throw_if_cancelled();
    context.narrate("hive", "job_completed", name, fmt::format("Completed {}", name));
    job.complete();
  } catch (const JobCancelled&) {
    end_cancelled();
  } catch (const JobError& error) {
    if (job.cancellation().cancelled()) return end_cancelled();
    fail(context, job, narrator_.clean(error.what()), error.code());
  } catch (const std::exception& error) {
    // The boundary: every handler failure ends here, once, as the job's error. A handler
    // that fails because it was cancelled (an aborted transfer) ends as cancelled.
    if (job.cancellation().cancelled()) return end_cancelled();
    fail(context, job, narrator_.clean(error.what()));
  } catch (...) {
    if (job.cancellation().cancelled()) return end_cancelled();
    fail(context, job, "the handler failed with an unknown error");
  }
}

}  // namespace rbee::jobs
