#include "rbee/hive/api_json.hpp"

namespace rbee::hive {
namespace {

nlohmann::json optional_ms(const std::optional<std::int64_t>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace

namespace {

nlohmann::json files_json(const std::vector<catalog::ModelFile>& list) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& file : list) {
    files.push_back({{"path", file.path},
                     {"size", file.size},
                     {"sha256", file.sha256},
                     {"etag", file.etag},
                     {"state", file.state},
                     {"blob", file.blob}});
  }
  return files;
}

}  // namespace

nlohmann::json to_json(const catalog::ModelEntry& entry) {
  nlohmann::json revisions = nlohmann::json::array();
  for (const auto& revision : entry.revisions) {
    revisions.push_back({{"commit", revision.commit},
                         {"status", catalog::to_string(revision.status)},
                         {"size", revision.size},
                         {"error", revision.error},
                         {"added_at_ms", revision.added_at_ms},
                         {"files", files_json(revision.files)}});
  }
  // rbee's programs read name, size_bytes and loaded (its UI shows "NaN GB" without them).
  return {{"id", entry.id.str()},
          {"name", entry.id.str()},
          {"size_bytes", entry.bytes_total},
          {"loaded", false},
          {"source", entry.source},
          {"endpoint", entry.endpoint},
          {"revision", entry.revision},
          {"commit", entry.commit},
          {"path", entry.path},
          {"status", catalog::to_string(entry.status)},
          {"bytes_done", entry.bytes_done},
          {"bytes_total", entry.bytes_total},
          {"progress", entry.progress()},
          {"size", entry.bytes_total},
          {"error", entry.error},
          {"files", files_json(entry.files)},
          {"refs", entry.refs},
          {"revisions", std::move(revisions)},
          {"added_at_ms", entry.added_at_ms},
          {"updated_at_ms", entry.updated_at_ms},
          {"last_job_id", entry.last_job_id}};
}

std::string sse_url(const std::string& job_id) {
  return "/v1/jobs/" + job_id + "/stream";
}

nlohmann::json to_json(const jobs::Job& job) {
  const jobs::JobStatus status = job.status();
  return {{"job_id", job.id()},
          {"operation", job.operation_name()},
          {"state", jobs::to_string(status.state)},
          {"created_at_ms", status.created_at_ms},
          {"started_at_ms", optional_ms(status.started_at_ms)},
          {"finished_at_ms", optional_ms(status.finished_at_ms)},
          {"error", status.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(status.error)},
          {"error_code",
           status.error_code.empty() ? nlohmann::json(nullptr) : nlohmann::json(status.error_code)},
          {"request", jobs::to_json(job.operation())},
          {"sse_url", sse_url(job.id())},
          {"events", job.events().last_seq()}};
}

nlohmann::json error_body(std::string_view code, std::string_view message) {
  return {{"error", {{"code", code}, {"message", message}}}};
}

}  // namespace rbee::hive
