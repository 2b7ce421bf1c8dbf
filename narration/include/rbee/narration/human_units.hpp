#pragma once
// Sizes and durations as people read them, the same in narration (the daemon) and on the
// operator's terminal (the client): "1.5 KiB", "3 min 05 s".

#include <cstdint>
#include <string>

namespace rbee::narration {

// "512 B", "1.5 KiB", "3.0 GiB" (binary units, one decimal).
std::string format_bytes(std::uint64_t bytes);

// "42 s", "3 min 05 s", "2 h 10 min": an ETA read at a glance.
std::string format_duration(double seconds);

}  // namespace rbee::narration
