#pragma once
// Content-Range of a 206 answer ("bytes first-last/total"), read strictly: a server that answers
// another range than the one asked, or names another file size, is a protocol error, never
// bytes written at the wrong offset (DESIGN §12).

#include <cstdint>
#include <optional>
#include <string_view>

namespace rbee::provisioner {

struct ContentRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;              // inclusive
  std::optional<std::uint64_t> total;  // nullopt for "*"
};

// nullopt unless the value is exactly "bytes <first>-<last>/<total or *>" with first <= last
// (and last < total when the total is known), every number a plain decimal that fits.
std::optional<ContentRange> parse_content_range(std::string_view value);

// Whether a 206 answer with this Content-Range delivers what "bytes=<first>-" (or
// "bytes=<first>-<last>") asked of a file of `size` bytes.
bool content_range_matches(std::string_view value, std::uint64_t first,
                           std::optional<std::uint64_t> last, std::uint64_t size);

}  // namespace rbee::provisioner
