#pragma once
// Outside text made safe to show: every string that came from outside the hive (a Hub message,
// a header, a file name, an error text) passes through sanitize() before it reaches narration,
// a log line, the catalog, a metrics label or a terminal (DESIGN §12).

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace rbee::narration {

inline constexpr std::size_t kMaxOutsideText = 1024;

// Valid UTF-8 (each invalid byte becomes U+FFFD), no control characters (C0, DEL, C1 and the
// bidirectional overrides become U+FFFD; tab, CR and LF become a space), at most `max_bytes`
// bytes (cut at a character boundary, ending in "…"). Pure and thread-safe.
std::string sanitize(std::string_view text, std::size_t max_bytes = kMaxOutsideText);

// JSON text that never throws: strings with invalid UTF-8 are written with U+FFFD instead
// (nlohmann::json::dump() throws type_error.316 on them, which once killed the daemon).
std::string dump_json(const nlohmann::json& value);

}  // namespace rbee::narration
