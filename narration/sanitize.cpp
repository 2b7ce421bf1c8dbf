#include "rbee/narration/sanitize.hpp"

#include <nlohmann/json.hpp>

namespace rbee::narration {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kEllipsis = "\xE2\x80\xA6";     // U+2026

// The code point at `pos` and its length in bytes, or length 0 for an invalid sequence
// (overlong forms, surrogates and values past U+10FFFF included).
std::pair<char32_t, std::size_t> decode(std::string_view text, std::size_t pos) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[pos + i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  std::size_t length = 0;
  char32_t value = 0;
  char32_t minimum = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, value = lead & 0x1F, minimum = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, value = lead & 0x0F, minimum = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, value = lead & 0x07, minimum = 0x10000;
  } else {
    return {0, 0};
  }
  if (pos + length > text.size()) return {0, 0};
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return {0, 0};
    value = (value << 6) | (byte(i) & 0x3F);
  }
  if (value < minimum || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return {0, 0};
  return {value, length};
}

bool is_unsafe(char32_t c) {
  return c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F) ||           // C0, DEL, C1 (ESC, CSI…)
         (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);  // bidi overrides
}

}  // namespace

std::string sanitize(std::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + kEllipsis.size());
  const std::size_t limit = max_bytes > kEllipsis.size() ? max_bytes - kEllipsis.size() : 0;
  std::size_t cut = 0;  // the longest prefix of `out` that leaves room for the ellipsis
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto [c, length] = decode(text, pos);
    std::string_view piece = text.substr(pos, length);
    if (length == 0) {
      piece = kReplacement;
      length = 1;
    } else if (c == '\t' || c == '\n' || c == '\r') {
      piece = " ";
    } else if (is_unsafe(c)) {
      piece = kReplacement;
    }
    if (out.size() + piece.size() > max_bytes) {  // it does not fit whole: cut and mark
      out.resize(cut);
      out.append(kEllipsis);
      return out;
    }
    out.append(piece);
    if (out.size() <= limit) cut = out.size();
    pos += length;
  }
  return out;
}

std::string dump_json(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace rbee::narration
