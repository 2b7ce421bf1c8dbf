#include "rbee/cli/sse_parser.hpp"

#include <charconv>

namespace rbee::cli {

void SseParser::feed(std::string_view chunk,
                     const std::function<void(const StreamMessage&)>& on_message) {
  for (const char c : chunk) {
    if (c == '\n' && after_cr_) {  // the LF of a CRLF: the line ended at the CR
      after_cr_ = false;
      continue;
    }
    after_cr_ = c == '\r';
    if (c == '\n' || c == '\r') {
      take_line(line_, on_message);
      line_.clear();
      continue;
    }
    if (++message_bytes_ > kMaxMessageBytes) {
      throw std::length_error("the hive sent an event longer than 4 MiB");
    }
    line_ += c;
  }
}

void SseParser::take_line(std::string_view line,
                          const std::function<void(const StreamMessage&)>& on_message) {
  if (line.empty()) {  // the blank line that ends a message
    if (has_data_) on_message(message_);
    message_ = StreamMessage{};
    has_data_ = false;
    message_bytes_ = 0;
    return;
  }
  if (line.front() == ':') return;  // a comment, such as the ": ping" heartbeat
  const auto colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (value.starts_with(' ')) value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) message_.data += '\n';
    message_.data.append(value);
    has_data_ = true;
  } else if (field == "id") {
    std::uint64_t id = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), id);
    if (error == std::errc() && end == value.data() + value.size()) message_.id = id;
  }  // "event", "retry" and unknown fields are not used by the hive's streams
}

}  // namespace rbee::cli
