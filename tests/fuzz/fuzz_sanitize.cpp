// libFuzzer: outside text on its way to narration, logs and terminals. The result must be
// valid UTF-8 (nlohmann parses it back), bounded, and free of ESC and other C0 controls.
#include <rbee/narration/sanitize.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string clean = rbee::narration::sanitize(text, 200);
  if (clean.size() > 200) std::abort();
  for (const char c : clean) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) std::abort();
  }
  const std::string dumped = nlohmann::json(clean).dump();  // throws on invalid UTF-8
  if (nlohmann::json::parse(dumped).get<std::string>() != clean) std::abort();
  (void)rbee::narration::dump_json(nlohmann::json(std::string(text)));
  return 0;
}
