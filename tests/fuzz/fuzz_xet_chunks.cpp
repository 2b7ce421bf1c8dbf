// libFuzzer: xorb bytes as a hostile transfer server may send them, through the chunk decoder
// (headers, LZ4 frames, byte grouping) and the multipart/byteranges reader. Both throw only
// XetFormatError; every decoded chunk is as long as its header said, and never over 1 MiB.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "xet/xet_format.hpp"

using namespace rbee::provisioner::xet;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const char* bytes = reinterpret_cast<const char*>(data);
  try {
    ChunkDecoder decoder([](std::string_view chunk) {
      if (chunk.empty() || chunk.size() > (1 << 20)) std::abort();
    });
    // Fed in uneven pieces, as a network delivers them.
    for (std::size_t at = 0; at < size;) {
      const std::size_t n = std::min<std::size_t>(size - at, 1 + (at % 7) * 13);
      decoder.feed(bytes + at, n);
      at += n;
    }
  } catch (const XetFormatError&) {
  }
  try {
    ByteRangesReader reader("rbee", [](std::uint64_t, const char*, std::size_t length) {
      if (length == 0) std::abort();
    });
    for (std::size_t at = 0; at < size;) {
      const std::size_t n = std::min<std::size_t>(size - at, 1 + (at % 5) * 17);
      reader.feed(bytes + at, n);
      at += n;
    }
  } catch (const XetFormatError&) {
  }
  return 0;
}
