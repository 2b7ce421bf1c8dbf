#include "rbee/hive/request_checks.hpp"

#include <algorithm>
#include <array>
#include <charconv>

namespace rbee::hive {
namespace {

constexpr std::array<std::string_view, 3> kLoopbackNames = {"127.0.0.1", "localhost", "[::1]"};
constexpr std::size_t kMaxHostLength = 255 + 1 + 5;

bool is_port(std::string_view text) {
  unsigned port = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), port);
  return !text.empty() && text.size() <= 5 && error == std::errc() &&
         end == text.data() + text.size() && port <= 65535;
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  return out;
}

}  // namespace

std::optional<std::uint64_t> parse_last_event_id(std::string_view text) {
  std::uint64_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || ptr != end) return std::nullopt;
  return value;
}

std::optional<std::string> host_name(std::string_view host) {
  if (host.empty() || host.size() > kMaxHostLength) return std::nullopt;
  std::string name;
  if (host.front() == '[') {
    const auto close = host.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const auto rest = host.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !is_port(rest.substr(1)))) return std::nullopt;
    name = lowercase(host.substr(0, close + 1));
    const auto inside = std::string_view(name).substr(1, name.size() - 2);
    const bool valid = !inside.empty() && std::all_of(inside.begin(), inside.end(), [](char c) {
      return c == ':' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    });
    return valid ? std::optional(name) : std::nullopt;
  }
  const auto colon = host.find(':');
  if (colon != std::string_view::npos && !is_port(host.substr(colon + 1))) return std::nullopt;
  name = lowercase(host.substr(0, colon));
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty() || !std::all_of(name.begin(), name.end(), is_name_char)) return std::nullopt;
  return name;
}

bool is_allowed_host(std::string_view host, std::span<const std::string> allowed) {
  if (host.empty()) return true;
  const auto name = host_name(host);
  if (!name) return false;
  if (std::find(kLoopbackNames.begin(), kLoopbackNames.end(), *name) != kLoopbackNames.end()) {
    return true;
  }
  return std::any_of(allowed.begin(), allowed.end(), [&](const std::string& entry) {
    const auto allowed_name = host_name(entry);
    return allowed_name && *allowed_name == *name;
  });
}

bool is_same_origin(std::string_view origin, std::string_view host) {
  if (origin.empty()) return true;
  const std::string given = lowercase(origin);
  const std::string own_host = lowercase(host);
  return !own_host.empty() && (given == "http://" + own_host || given == "https://" + own_host);
}

}  // namespace rbee::hive
