// libFuzzer: the range sidecar of a ranged download, as a crash, a full disk or another user of
// a shared cache may leave it. Whatever parse_range_sidecar accepts is sorted, merged, non-empty
// ranges within the file; nothing it reads may throw or crash.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ranged_download.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  constexpr std::uint64_t kFileSize = 1 << 20;
  const auto ranges = rbee::provisioner::parse_range_sidecar(text, kFileSize, "abc");
  if (!ranges) return 0;
  std::uint64_t previous_end = 0;
  for (std::size_t i = 0; i < ranges->size(); ++i) {
    const auto& range = (*ranges)[i];
    if (range.begin >= range.end || range.end > kFileSize) std::abort();
    if (i > 0 && range.begin <= previous_end) std::abort();  // not merged or not sorted
    previous_end = range.end;
  }
  return 0;
}
