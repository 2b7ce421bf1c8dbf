#include <doctest/doctest.h>
#include <rbee/narration/human_units.hpp>

using namespace rbee::narration;

TEST_CASE("sizes are formatted for people") {
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(3ULL << 30) == "3.0 GiB");
}

TEST_CASE("durations are formatted for people") {
  CHECK(format_duration(42) == "42 s");
  CHECK(format_duration(185) == "3 min 05 s");
  CHECK(format_duration(7800) == "2 h 10 min");
}
