#include "rbee/hive/stream_profiles.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <rbee/narration/sanitize.hpp>

namespace rbee::hive {
namespace {

// rbee's narration-core pads the function name to 40 and the action to 20 columns.
constexpr std::size_t kFunctionWidth = 40;
constexpr std::size_t kActionWidth = 20;
constexpr double kMegabyte = 1e6;

bool is_terminal_marker(std::string_view data) {
  return data == jobs::kDoneMarker || data == jobs::kCancelledMarker || data.starts_with("[ERROR]");
}

// Two data lines, as rbee's hive sends `formatted`: ANSI only in the header line.
std::string rbee_narration(std::string_view actor, std::string_view action,
                           std::string_view human) {
  return fmt::format("data: \x1b[1m{:<{}}\x1b[0m \x1b[2m{:<{}}\x1b[0m\ndata: {}\n\n",
                     fmt::format("rbee_hive::{}", actor), kFunctionWidth, action, kActionWidth,
                     human);
}

// rbee's UI reads progress from the narration text: "NN.N% complete", "X MB / Y MB", ✅ / ❌.
std::string rbee_human(const nlohmann::json& event) {
  const std::string action = event.value("action", "");
  std::string human = event.value("human", "");
  if (action == "download_progress" && event.contains("model_bytes_total")) {
    const double done = event.value("model_bytes_done", 0.0);
    const double total = event.value("model_bytes_total", 0.0);
    const double percent = total > 0 ? 100.0 * done / total : 0.0;
    human = fmt::format("{:.1f}% complete ({:.1f} MB / {:.1f} MB, {:.1f} MB/s)", percent,
                        done / kMegabyte, total / kMegabyte,
                        event.value("bytes_per_sec", 0.0) / kMegabyte);
  } else if (action == "job_completed" || action == "file_verified") {
    human = "✅ " + human;
  } else if (action == "job_failed" || action == "file_failed") {
    human = "❌ " + human;
  }
  return human;
}

std::string format_rbee(const jobs::LogEntry& entry) {
  if (is_terminal_marker(entry.data)) return fmt::format("data: {}\n\n", entry.data);
  const auto event = nlohmann::json::parse(entry.data, nullptr, false);
  if (!event.is_object()) return {};
  if (event.value("type", "") == "data") {
    const nlohmann::json data = {{"action", event.value("action", "")},
                                 {"payload", event.value("payload", nlohmann::json::object())}};
    return fmt::format("event: data\ndata: {}\n\n", narration::dump_json(data));
  }
  return rbee_narration(event.value("actor", "hive"), event.value("action", ""), rbee_human(event));
}

}  // namespace

StreamProfile stream_profile_for(std::string_view accept) {
  return accept.find("text/event-stream") != std::string_view::npos ? StreamProfile::standard
                                                                    : StreamProfile::rbee;
}

std::string format_event(StreamProfile profile, const jobs::LogEntry& entry) {
  if (profile == StreamProfile::rbee) return format_rbee(entry);
  return fmt::format("id: {}\ndata: {}\n\n", entry.seq, entry.data);
}

std::string format_idle(StreamProfile profile, const jobs::Job& job) {
  if (profile == StreamProfile::standard) return ": ping\n\n";
  const std::string name(job.operation_name());
  const bool queued = job.status().state == jobs::JobState::queued;
  return rbee_narration("hive", "job_waiting",
                        queued ? fmt::format("⏳ {} is queued behind other jobs", name)
                               : fmt::format("⏳ {} is still running", name));
}

}  // namespace rbee::hive
