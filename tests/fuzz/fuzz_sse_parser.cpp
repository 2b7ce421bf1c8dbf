// libFuzzer: the terminal client's reader of an event stream, fed in pieces of every size.
#include <rbee/cli/sse_parser.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 64;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  rbee::cli::SseParser parser;
  try {
    for (std::size_t at = 0; at < stream.size(); at += piece) {
      parser.feed(stream.substr(at, piece), [&](const rbee::cli::StreamMessage& message) {
        if (message.data.size() > stream.size()) std::abort();
      });
    }
  } catch (const std::length_error&) {
  }
  return 0;
}
