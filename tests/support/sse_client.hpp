#pragma once
// A small SSE reader for tests: reads a job stream until its terminal line (or a stop
// condition), keeping every message with its id.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace rbee::testing {

struct SseMessage {
  std::optional<std::uint64_t> id;
  std::string data;     // empty for a comment
  std::string comment;  // ": ping" arrives as "ping"
  bool is_comment() const { return data.empty() && !comment.empty(); }
  bool is_terminal() const;  // [DONE], [ERROR] …, [CANCELLED]
  nlohmann::json json() const { return nlohmann::json::parse(data); }
};

struct SseStream {
  int status = 0;
  std::string content_type;
  std::string error_body;  // the body when status is not 200
  std::vector<SseMessage> messages;
  bool transport_error = false;

  std::vector<SseMessage> events() const;  // messages with data (no comments)
  std::string terminal() const;            // the terminal line, or "" when none arrived
};

struct SseRequest {
  int port = 0;
  std::string path;
  httplib::Headers headers;
  // Called for every message; return false to disconnect (a watcher that goes away).
  std::function<bool(const SseMessage&)> on_message;
  std::chrono::seconds read_timeout{30};
};

SseStream read_sse(const SseRequest& request);

}  // namespace rbee::testing
