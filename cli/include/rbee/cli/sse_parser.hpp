#pragma once
// SseParser: the terminal client's reader of a job's event stream (text/event-stream), fed the
// bytes as they arrive. Lines end in LF, CRLF or CR; a blank line ends a message; "id:" and
// "data:" fields are read, comments (": ping") and other fields skipped. Memory is bounded: a
// message longer than kMaxMessageBytes is a protocol error, not a reason to grow without end.

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace rbee::cli {

// One message of a job's event stream that carries data.
struct StreamMessage {
  std::uint64_t id = 0;
  std::string data;  // a JSON object, or the terminal line ([DONE], [ERROR] …, [CANCELLED])
};

class SseParser {
 public:
  static constexpr std::size_t kMaxMessageBytes = 4 * 1024 * 1024;

  // Calls on_message for each complete message with data. Throws std::length_error when a
  // message grows past kMaxMessageBytes.
  void feed(std::string_view chunk, const std::function<void(const StreamMessage&)>& on_message);

 private:
  void take_line(std::string_view line,
                 const std::function<void(const StreamMessage&)>& on_message);

  std::string line_;       // the line being received
  bool after_cr_ = false;  // the last byte was CR: an LF now ends nothing new
  StreamMessage message_;  // the message being assembled
  bool has_data_ = false;
  std::size_t message_bytes_ = 0;
};

}  // namespace rbee::cli
