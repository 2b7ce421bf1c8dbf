#include "support/sse_client.hpp"

namespace rbee::testing {

bool SseMessage::is_terminal() const {
  return data == "[DONE]" || data == "[CANCELLED]" || data.starts_with("[ERROR]");
}

std::vector<SseMessage> SseStream::events() const {
  std::vector<SseMessage> result;
  for (const auto& message : messages) {
    if (!message.is_comment()) result.push_back(message);
  }
  return result;
}

std::string SseStream::terminal() const {
  for (const auto& message : messages) {
    if (message.is_terminal()) return message.data;
  }
  return "";
}

namespace {

// Parses complete messages (ended by a blank line) out of `buffer`, leaving any partial one.
std::vector<SseMessage> take_messages(std::string& buffer) {
  std::vector<SseMessage> messages;
  std::size_t end;
  while ((end = buffer.find("\n\n")) != std::string::npos) {
    const std::string block = buffer.substr(0, end);
    buffer.erase(0, end + 2);
    SseMessage message;
    std::size_t start = 0;
    while (start <= block.size()) {
      auto line_end = block.find('\n', start);
      if (line_end == std::string::npos) line_end = block.size();
      const std::string line = block.substr(start, line_end - start);
      if (line.starts_with("id: ")) message.id = std::stoull(line.substr(4));
      if (line.starts_with("data: ")) message.data = line.substr(6);
      if (line.starts_with(": ")) message.comment = line.substr(2);
      start = line_end + 1;
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

}  // namespace

SseStream read_sse(const SseRequest& request) {
  SseStream stream;
  httplib::Client client("127.0.0.1", request.port);
  client.set_connection_timeout(std::chrono::seconds(10));
  client.set_read_timeout(request.read_timeout);
  std::string buffer;
  bool stop = false;
  // A standard SSE client names the stream's type; without it the hive speaks rbee's profile.
  httplib::Headers headers = request.headers;
  if (headers.find("Accept") == headers.end()) headers.emplace("Accept", "text/event-stream");
  auto result = client.Get(
      request.path, headers,
      [&](const httplib::Response& response) {
        stream.status = response.status;
        stream.content_type = response.get_header_value("Content-Type");
        return true;
      },
      [&](const char* data, std::size_t length) {
        if (stream.status != 200) {
          stream.error_body.append(data, length);
          return true;
        }
        buffer.append(data, length);
        for (auto& message : take_messages(buffer)) {
          stream.messages.push_back(message);
          if (request.on_message && !request.on_message(message)) stop = true;
          if (message.is_terminal()) stop = true;
        }
        return !stop;
      });
  // cpp-httplib calls no response handler for a body-less answer (204).
  if (result && stream.status == 0) stream.status = result->status;
  // Stopping on purpose ends the request with a "canceled" error; only others count.
  stream.transport_error = !result && !stop;
  return stream;
}

}  // namespace rbee::testing
