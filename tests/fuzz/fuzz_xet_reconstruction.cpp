// libFuzzer: a Xet reconstruction (DESIGN §15) as a broken or hostile CAS may send it, read as
// v2 and as v1. parse_reconstruction throws only XetFormatError; whatever it accepts is a plan
// the download can follow: terms that add up to the file, each inside a fetch of its xorb.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "xet/xet_format.hpp"

using namespace rbee::provisioner::xet;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  constexpr std::uint64_t kFileSize = 1000;
  for (const auto version : {ReconstructionVersion::v2, ReconstructionVersion::v1}) {
    try {
      const Reconstruction plan = parse_reconstruction(text, version, kFileSize, {});
      std::uint64_t total = 0;
      for (const auto& term : plan.terms) {
        if (term.chunks.begin >= term.chunks.end || term.xorb.size() != 64) std::abort();
        total += term.unpacked_length;
      }
      if (total != plan.offset_into_first_range + kFileSize) std::abort();
      for (const auto& fetch : plan.fetches) {
        for (const auto& range : fetch.ranges) {
          if (range.first > range.last) std::abort();
        }
      }
    } catch (const XetFormatError&) {
    }
  }
  return 0;
}
