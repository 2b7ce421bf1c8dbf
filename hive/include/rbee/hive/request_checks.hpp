#pragma once
// Pure checks of what a client sends in headers (no I/O, no state): the parsers of outside
// input on the HTTP side, each fuzzed in tests/fuzz.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace rbee::hive {

// Last-Event-ID: the decimal sequence number of the last event the client saw.
std::optional<std::uint64_t> parse_last_event_id(std::string_view text);

// The lowercased name of a Host value: "name", "name:port", "[v6]" or "[v6]:port" (brackets
// kept, a trailing dot dropped). nullopt when malformed (empty, bad port, stray characters).
std::optional<std::string> host_name(std::string_view host);

// DNS rebinding: without a token only loopback names (127.0.0.1, localhost, [::1]) and the
// operator's `allowed` names are served. A request without Host (HTTP/1.0) cannot come from a
// browser and is allowed.
bool is_allowed_host(std::string_view host, std::span<const std::string> allowed);

// A state-changing request from a web page carries Origin; it is allowed only when that is the
// hive's own origin (http or https, the request's own Host). No Origin: not from a browser.
bool is_same_origin(std::string_view origin, std::string_view host);

}  // namespace rbee::hive
