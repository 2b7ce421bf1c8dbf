#include "rbee/narration/event.hpp"

#include <chrono>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace rbee::narration {

std::string_view to_string(Level level) {
  switch (level) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "info";
}

Level parse_level(std::string_view text) {
  for (Level level : {Level::debug, Level::info, Level::warn, Level::error}) {
    if (text == to_string(level)) return level;
  }
  throw std::invalid_argument("unknown log level '" + std::string(text) +
                              "' (expected debug, info, warn or error)");
}

std::int64_t now_unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

nlohmann::json to_json(const NarrationEvent& event) {
  nlohmann::json json = {
      {"type", "narration"},
      {"actor", event.actor},
      {"action", event.action},
      {"target", event.target},
      {"human", event.human},
      {"job_id", event.job_id},
      {"level", to_string(event.level)},
      {"emitted_at_ms", event.emitted_at_ms},
  };
  if (event.progress) {
    const Progress& p = *event.progress;
    json["file"] = p.file;
    json["bytes_done"] = p.bytes_done;
    json["bytes_total"] = p.bytes_total;
    json["bytes_per_sec"] = p.bytes_per_sec;
    json["eta_s"] = p.eta_s ? nlohmann::json(*p.eta_s) : nlohmann::json(nullptr);
    json["model_bytes_done"] = p.model_bytes_done;
    json["model_bytes_total"] = p.model_bytes_total;
    auto& files = json["files"] = nlohmann::json::array();
    for (const auto& f : p.in_flight)
      files.push_back(
          {{"file", f.file}, {"bytes_done", f.bytes_done}, {"bytes_total", f.bytes_total}});
  }
  return json;
}

}  // namespace rbee::narration
