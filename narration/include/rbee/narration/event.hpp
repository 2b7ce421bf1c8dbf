#pragma once
// NarrationEvent: one human-readable, machine-parseable thing that happened in the hive.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace rbee::narration {

enum class Level { debug, info, warn, error };

std::string_view to_string(Level level);
// Throws std::invalid_argument for anything but debug|info|warn|error.
Level parse_level(std::string_view text);

// One file being transferred, as listed in Progress::in_flight.
struct FileProgress {
  std::string file;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
};

// Structured progress of one file transfer; serialised flat beside the event's fields.
struct Progress {
  std::string file;                    // the file being transferred
  std::uint64_t bytes_done = 0;        // of that file
  std::uint64_t bytes_total = 0;       // of that file
  double bytes_per_sec = 0;            // of the whole download
  std::optional<double> eta_s;         // of the whole download; absent while the speed is unknown
  std::uint64_t model_bytes_done = 0;  // of every selected file together
  std::uint64_t model_bytes_total = 0;
  std::vector<FileProgress> in_flight;  // every file being transferred now, "files" in JSON
};

struct NarrationEvent {
  std::string actor;   // component that speaks: "hive", "provisioner", ...
  std::string action;  // what happened, snake_case: "job_started", "download_progress"
  std::string target;  // what it happened to: a model id, a file, a job id
  std::string human;   // one sentence for an operator
  std::string job_id;  // empty for events that belong to no job
  Level level = Level::info;
  std::int64_t emitted_at_ms = 0;  // Unix epoch milliseconds; 0 means "stamp on emit"
  std::optional<Progress> progress;
};

std::int64_t now_unix_ms();

// {"type":"narration","actor",...,"emitted_at_ms"[,"file","bytes_done","bytes_total",
// "bytes_per_sec","eta_s","model_bytes_done","model_bytes_total","files":[{"file","bytes_done",
// "bytes_total"}]]}: the SSE data line of DESIGN §3.
nlohmann::json to_json(const NarrationEvent& event);

}  // namespace rbee::narration
