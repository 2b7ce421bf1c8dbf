#include "rbee/provisioner/content_range.hpp"

#include <charconv>

namespace rbee::provisioner {
namespace {

// A plain decimal (no sign, no spaces) that fits; the text after it stays in `text`.
std::optional<std::uint64_t> take_number(std::string_view& text) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end == text.data()) return std::nullopt;
  text.remove_prefix(static_cast<std::size_t>(end - text.data()));
  return value;
}

bool take(std::string_view& text, std::string_view expected) {
  if (!text.starts_with(expected)) return false;
  text.remove_prefix(expected.size());
  return true;
}

}  // namespace

std::optional<ContentRange> parse_content_range(std::string_view value) {
  ContentRange range;
  if (!take(value, "bytes ")) return std::nullopt;
  const auto first = take_number(value);
  if (!first || !take(value, "-")) return std::nullopt;
  const auto last = take_number(value);
  if (!last || !take(value, "/") || *first > *last) return std::nullopt;
  range.first = *first;
  range.last = *last;
  if (value == "*") return range;
  const auto total = take_number(value);
  if (!total || !value.empty() || *last >= *total) return std::nullopt;
  range.total = *total;
  return range;
}

bool content_range_matches(std::string_view value, std::uint64_t first,
                           std::optional<std::uint64_t> last, std::uint64_t size) {
  const auto range = parse_content_range(value);
  return range && range->first == first && range->last == last.value_or(size - 1) &&
         range->total == size;
}

}  // namespace rbee::provisioner
