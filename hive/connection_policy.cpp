// GuardedServer's policy: what a connection may do before it holds a thread (a head that is
// HTTP, complete within its size and time), which body the hive reads at all, and which
// waiting connection is dropped when a cap is reached. The accept loop (guarded_server.cpp)
// applies it.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <charconv>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>

#include "guarded_connection.hpp"
#include "rbee/hive/api_json.hpp"

namespace rbee::hive {

using httplib::Request;
using httplib::Response;

namespace {

// The answers given without a worker: the connection closes right after.
constexpr std::string_view kHeadTimedOut =
    "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
constexpr std::string_view kHeadTooLarge =
    "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: "
    "0\r\n\r\n";
constexpr std::string_view kNotHttp =
    "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

// Where a request head ends (CRLF CRLF, or the bare LF LF some clients send), or npos.
std::size_t head_end(std::string_view bytes) {
  const auto crlf = bytes.find("\r\n\r\n");
  const auto lf = bytes.find("\n\n");
  return std::min(crlf, lf);
}

// A request line starts with a method token: anything else (TLS, a port scanner) is not HTTP.
bool starts_like_http(char first) {
  return (first >= 'A' && first <= 'Z') || first == '\r' || first == '\n';
}

struct BodyRefusal {
  int status;
  std::string_view code;
  std::string message;
};

// A body is read only when its size is declared and small: cpp-httplib bounds a body by its
// payload limit only when Content-Length is present, and inflates gzip and brotli without bound.
std::optional<BodyRefusal> refuse_body(const Request& request, std::size_t max_body_bytes) {
  if (request.has_header("Transfer-Encoding")) {
    return BodyRefusal{411, "length_required",
                       fmt::format("chunked request bodies are not accepted: send the body with "
                                   "Content-Length (at most {} bytes)",
                                   max_body_bytes)};
  }
  if (request.has_header("Content-Encoding")) {
    return BodyRefusal{415, "unsupported_content_encoding",
                       "compressed request bodies are not accepted: send the body uncompressed"};
  }
  const auto lengths = request.get_header_value_count("Content-Length");
  if (lengths == 0) return std::nullopt;
  const std::string text = request.get_header_value("Content-Length");
  std::uint64_t length = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), length);
  if (lengths > 1 || text.empty() || error != std::errc() || end != text.data() + text.size()) {
    return BodyRefusal{400, "bad_request", "the request has an invalid Content-Length"};
  }
  if (length > max_body_bytes) {
    return BodyRefusal{413, "payload_too_large",
                       fmt::format("the request body is larger than {} bytes", max_body_bytes)};
  }
  return std::nullopt;
}

}  // namespace

httplib::Server::HandlerResponse GuardedServer::guard_request(const Request& request,
                                                              Response& response) {
  HandlerResponse outcome = HandlerResponse::Unhandled;
  if (auto refusal = refuse_body(request, limits_.max_body_bytes)) {
    response.status = refusal->status;
    response.set_content(narration::dump_json(error_body(refusal->code, refusal->message)),
                         "application/json");
    outcome = HandlerResponse::Handled;
  } else if (request_guard_) {
    outcome = request_guard_(request, response);
  }
  // Answered before the body was read: the unread body must never be parsed as a request.
  if (outcome == HandlerResponse::Handled) {
    response.set_header("Connection", "close");
    close_connection_after_response();
  }
  return outcome;
}

// Evicts a waiting connection (of `client` when that client is at its cap, else of anyone),
// the least likely to be a real client first: one that has sent part of a head and not the rest
// (a slowloris), then one that has sent nothing yet, then an idle keep-alive connection that
// has completed requests; the oldest of its kind. False when nothing is waiting.
bool GuardedServer::make_room_for(const std::string& client) {
  ConnectionPtr victim;
  {
    std::lock_guard lock(mutex_);
    const bool client_full = !client.empty() && per_client_.count(client) != 0 &&
                             per_client_[client] >= limits_.max_connections_per_client;
    auto suspicion = [](const Connection& c) {
      return c.head_started ? 0 : c.requests == 0 ? 1 : 2;
    };
    for (const auto& candidate : waiting_) {
      if (client_full && candidate->client != client) continue;
      if (!victim || suspicion(*candidate) < suspicion(*victim)) victim = candidate;
      if (suspicion(*victim) == 0) break;  // the oldest partial head: none is more suspect
    }
    if (!victim) return false;
    ++stats_.evicted;
  }
  close_connection(victim);
  return true;
}

void GuardedServer::check_head(const ConnectionPtr& connection) {
  // Peeking consumes nothing, so the kernel would delay its ACK; a client that sends its head
  // and body in two writes (Nagle) would then wait 40 ms for it. Acknowledge at once.
  const int yes = 1;
  ::setsockopt(connection->fd, IPPROTO_TCP, TCP_QUICKACK, &yes, sizeof(yes));
  thread_local std::vector<char> peeked;
  peeked.resize(limits_.max_head_bytes + 1);
  const ssize_t n = ::recv(connection->fd, peeked.data(), peeked.size(), MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) return close_connection(connection);  // gone, or failed
  const std::string_view bytes(peeked.data(), static_cast<std::size_t>(n));
  if (!starts_like_http(bytes.front())) {
    send_and_forget(connection->fd, kNotHttp);
    return close_connection(connection);
  }
  if (head_end(bytes) != std::string_view::npos) return hand_to_worker(connection);
  if (bytes.size() > limits_.max_head_bytes) {
    send_and_forget(connection->fd, kHeadTooLarge);
    return close_connection(connection);
  }
  std::lock_guard lock(mutex_);
  connection->head_started = true;
}

void GuardedServer::expire_waiting() {
  const auto now = Clock::now();
  std::vector<std::pair<ConnectionPtr, bool>> expired;  // connection, whether a head had begun
  {
    std::lock_guard lock(mutex_);
    for (const auto& connection : waiting_) {
      // A new connection or a begun head gets head_timeout; an idle keep-alive one idle_timeout.
      const bool head_due = connection->head_started || connection->requests == 0;
      const auto limit = head_due ? limits_.head_timeout : limits_.idle_timeout;
      if (now - connection->waiting_since >= limit) expired.emplace_back(connection, head_due);
    }
    for (const auto& [connection, head_due] : expired) stats_.timed_out += head_due ? 1 : 0;
  }
  for (const auto& [connection, head_due] : expired) {
    if (head_due) send_and_forget(connection->fd, kHeadTimedOut);
    close_connection(connection);
  }
}

}  // namespace rbee::hive
