// Pull-through: what a peer asks for and this hive lacks is pulled from upstream by a job
// (PullThrough: a model_download on the router's pull-through pool), and the request waits for
// it, polling, until the listing or the file's first bytes are here, the pull fails, or the
// wait has lasted pull_timeout.
#include <thread>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>
#include <rbee/provisioner/hub_client.hpp>

#include "hub_answers.hpp"
#include "mirror_impl.hpp"

namespace rbee::mirror {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr std::size_t kMaxModelPulls = 1024;

}  // namespace

// The snapshot of `id` at `revision`: from the cache, or pulled through by a model_download
// of `pull_model` (the whole repo, or the one file asked for), whose job id is then left in
// `pull_job`. Answers the error itself and returns null when there is none to be had.
std::shared_ptr<const RepoSnapshot> HubMirror::Impl::find_repo(
    const Request& request, const catalog::ModelId& id, const std::string& revision,
    const std::string& pull_model, Response& response, std::string* pull_job) {
  // A revision is outside text that may become a job (and a catalog field): the same rules
  // as a model_download's.
  try {
    catalog::validate_revision(revision);
  } catch (const catalog::CatalogError& error) {
    send_hub_error(response, 404, "RevisionNotFound", error.what());
    return nullptr;
  }
  const auto deadline = MirrorClock::now() + settings_.pull_timeout;
  std::string job_id;
  for (;;) {
    // The job's status first: a job that completed has written its snapshot before.
    std::optional<PullThrough::Status> status;
    if (!job_id.empty()) status = pull_through_.status(job_id);
    const RepoLookup found = repos_.find(id, revision);
    if (const auto* snapshot = std::get_if<std::shared_ptr<const RepoSnapshot>>(&found)) {
      if (pull_job) *pull_job = job_id;
      return *snapshot;
    }
    const RepoMiss miss = std::get<RepoMiss>(found);
    const std::string wanted = fmt::format("{}@{}", id.str(), revision);
    if (!may_pull(request)) {
      send_hub_error(response, 404, miss == RepoMiss::no_repo ? "RepoNotFound" : "RevisionNotFound",
                     fmt::format("{} is not in this hive's cache, and {}", wanted, why_no_pull()));
      return nullptr;
    }
    if (status && status->state == PullThrough::State::failed) {
      send_pull_failure(
          response, status->error_code,
          fmt::format("pulling {} from upstream failed ({}): {}", wanted, job_id, status->error));
      return nullptr;
    }
    if (status && status->state == PullThrough::State::completed) {
      send_hub_error(response, 404, "RevisionNotFound",
                     fmt::format("{} was pulled ({}), but the upstream names another commit now",
                                 wanted, job_id));
      return nullptr;
    }
    if (job_id.empty() && !start_pull(pull_model, revision, job_id, response)) return nullptr;
    if (!wait_a_moment(deadline, wanted, job_id, response)) return nullptr;
  }
}

bool HubMirror::Impl::start_pull(const std::string& model, const std::string& revision,
                                 std::string& job_id, Response& response) {
  PullThrough::Pull pull;
  try {
    pull = pull_through_.start(model, revision);
  } catch (const std::exception& error) {
    response.set_header("Retry-After", "5");
    send_hub_error(response, 503, "", fmt::format("cannot pull {}: {}", model, error.what()));
    return false;
  }
  job_id = pull.job_id;
  std::lock_guard lock(stats_mutex_);
  if (pull.started) ++stats_.pulls;
  if (model.find(':') == std::string::npos) {
    // Only a hint for files that arrive while their model is pulled: running pulls are
    // forgotten as they are found finished, and a flood of models clears it.
    if (model_pulls_.size() >= kMaxModelPulls) model_pulls_.clear();
    model_pulls_[model] = job_id;
  }
  return true;
}

// The pull of the whole model that is still running, if any: a file it will fetch needs no
// pull of its own (which would only wait for the model's lock).
std::optional<std::string> HubMirror::Impl::running_model_pull(const catalog::ModelId& id) {
  std::string job_id;
  {
    std::lock_guard lock(stats_mutex_);
    const auto found = model_pulls_.find(id.str());
    if (found == model_pulls_.end()) return std::nullopt;
    job_id = found->second;
  }
  if (pull_through_.status(job_id).state == PullThrough::State::running) return job_id;
  std::lock_guard lock(stats_mutex_);
  if (const auto found = model_pulls_.find(id.str());
      found != model_pulls_.end() && found->second == job_id) {
    model_pulls_.erase(found);
  }
  return std::nullopt;
}

// Sleeps one poll interval; false (and the answer given) when the hive stops or the wait for
// the upstream has lasted too long.
bool HubMirror::Impl::wait_a_moment(MirrorClock::time_point deadline, const std::string& wanted,
                                    const std::string& job_id, Response& response) const {
  if (stopping_) {
    send_hub_error(response, 503, "", "the hive is shutting down");
    return false;
  }
  if (MirrorClock::now() >= deadline) {
    send_hub_error(response, 504, "",
                   fmt::format("{} is still being pulled from upstream ({}); ask again later",
                               wanted, job_id));
    return false;
  }
  std::this_thread::sleep_for(kPollInterval);
  return true;
}

// The file's bytes: on disk, growing, or pulled through now (shared with every requester of
// the same file). Answers the error itself and returns nullopt when there are none.
// `job_id`: the pull of this file already started, if any.
std::optional<FileSource> HubMirror::Impl::open_source(const Request& request,
                                                       const catalog::ModelId& id,
                                                       const RepoSnapshot& snapshot,
                                                       const Sibling& sibling, std::string job_id,
                                                       Response& response) {
  const auto deadline = MirrorClock::now() + settings_.pull_timeout;
  const std::string wanted = fmt::format("{}/{}", id.str(), sibling.path);
  bool own_pull = !job_id.empty();  // else the whole model's pull, which this file is part of
  for (;;) {
    std::optional<PullThrough::Status> status;
    if (!job_id.empty()) status = pull_through_.status(job_id);
    if (status && !own_pull && status->state != PullThrough::State::running) {
      job_id.clear();  // the model's pull ended without this file: pull it alone
      status.reset();
    }
    if (auto growing = find_growing(id, snapshot, sibling)) return FileSource{{}, growing};
    if (auto verified = open_verified(id, snapshot, sibling)) {
      return FileSource{std::move(verified), nullptr};
    }
    if (!may_pull(request)) {
      send_not_cached(response, id, sibling);
      return std::nullopt;
    }
    if (status && status->state == PullThrough::State::failed) {
      send_pull_failure(
          response, status->error_code,
          fmt::format("pulling {} from upstream failed ({}): {}", wanted, job_id, status->error));
      return std::nullopt;
    }
    if (status && status->state == PullThrough::State::completed) {
      send_hub_error(response, 502, "",
                     fmt::format("{} was pulled ({}) but is not in the cache (deleted since?)",
                                 wanted, job_id));
      return std::nullopt;
    }
    if (job_id.empty()) {
      if (auto model_pull = running_model_pull(id)) {
        job_id = *model_pull;
      } else if (start_pull(id.str() + ":" + sibling.path, snapshot.listing.commit, job_id,
                            response)) {
        own_pull = true;
      } else {
        return std::nullopt;
      }
    }
    if (!wait_a_moment(deadline, wanted, job_id, response)) return std::nullopt;
  }
}

}  // namespace rbee::mirror
