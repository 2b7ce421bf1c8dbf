#include "rbee/hive/guarded_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>

#include "rbee/hive/api_json.hpp"
#include "rbee/hive/elastic_task_queue.hpp"

namespace rbee::hive {

using Clock = std::chrono::steady_clock;
using httplib::Request;
using httplib::Response;

namespace {

constexpr int kListenBacklog = 1024;
constexpr auto kSweepInterval = std::chrono::milliseconds(250);
constexpr std::size_t kStreamBufferSize = 16 * 1024;
constexpr auto kLingerTime = std::chrono::seconds(2);

// The answers the accept loop gives without a worker: the connection closes right after.
const std::string& refused_at_capacity() {
  static const std::string response = [] {
    const std::string body = narration::dump_json(
        error_body("too_many_connections", "the hive is at its connection limit"));
    return fmt::format(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: "
        "1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        body.size(), body);
  }();
  return response;
}
constexpr std::string_view kHeadTimedOut =
    "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
constexpr std::string_view kHeadTooLarge =
    "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: "
    "0\r\n\r\n";
constexpr std::string_view kNotHttp =
    "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

// Best effort on a non-blocking socket that is about to be closed: what does not fit now is
// dropped, the close ends the connection either way.
void send_and_forget(int fd, std::string_view text) {
  [[maybe_unused]] auto sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

std::string address_of(const sockaddr_storage& address, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  port = 0;
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text));
    port = ntohs(v4.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text));
    port = ntohs(v6.sin6_port);
  }
  return text;
}

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

// One client connection. The fields under "waiting" belong to the accept loop and are guarded
// by the server's mutex; those under "served" belong to the one worker serving it.
struct GuardedServer::Connection {
  int fd = -1;
  std::string client;  // the peer's address: the unit of the per-client cap
  int client_port = 0;
  bool closed = false;  // under mutex_

  // waiting
  bool waiting = false;
  std::list<ConnectionPtr>::iterator waiting_position;
  Clock::time_point waiting_since;
  bool head_started = false;  // some bytes of the next head have arrived
  std::size_t requests = 0;   // served on this connection so far

  // served
  Clock::time_point read_deadline;
  std::size_t head_budget = 0;  // head bytes cpp-httplib may still read before routing
  bool reached_routing = false;
  bool close_after = false;
};

namespace {
thread_local bool* t_close_after = nullptr;  // the served connection's close_after flag
}  // namespace

// cpp-httplib's Stream over one connection: buffered reads that fail at the connection's
// deadline (the head's, then the body's), writes that fail after write_timeout without progress.
class GuardedServer::ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(Connection& connection, const ConnectionLimits& limits)
      : connection_(connection), limits_(limits) {}

  bool is_readable() const override {
    return buffered() || wait_for(POLLIN, connection_.read_deadline);
  }
  bool is_writable() const override {
    return wait_for(POLLOUT, Clock::now() + limits_.write_timeout);
  }

  ssize_t read(char* ptr, std::size_t size) override {
    if (!connection_.reached_routing) {
      if (connection_.head_budget == 0) return -1;  // a head larger than max_head_bytes
      size = std::min(size, connection_.head_budget);
    }
    if (!buffered() && !fill()) return -1;
    const std::size_t n = std::min(size, end_ - begin_);
    std::memcpy(ptr, buffer_.data() + begin_, n);
    begin_ += n;
    if (!connection_.reached_routing) connection_.head_budget -= n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, std::size_t size) override {
    for (;;) {
      const ssize_t n = ::send(connection_.fd, ptr, size, MSG_NOSIGNAL);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      if (!wait_for(POLLOUT, Clock::now() + limits_.write_timeout)) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = connection_.client;
    port = connection_.client_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    if (::getsockname(connection_.fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      ip = address_of(address, port);
    }
  }
  socket_t socket() const override { return connection_.fd; }

  bool buffered() const { return begin_ < end_; }

 private:
  bool fill() {
    for (;;) {
      const ssize_t n = ::recv(connection_.fd, buffer_.data(), buffer_.size(), 0);
      if (n > 0) {
        begin_ = 0;
        end_ = static_cast<std::size_t>(n);
        return true;
      }
      if (n == 0) return false;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
      if (!wait_for(POLLIN, connection_.read_deadline)) return false;
    }
  }

  // True when the socket is ready (or has failed, which the next call reports) before deadline.
  bool wait_for(short events, Clock::time_point deadline) const {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd entry{connection_.fd, events, 0};
      const int ready = ::poll(&entry, 1, static_cast<int>(std::min<long long>(left, 60000)));
      if (ready > 0) return true;
      if (ready < 0 && errno != EINTR) return false;
    }
  }

  Connection& connection_;
  const ConnectionLimits& limits_;
  std::array<char, kStreamBufferSize> buffer_{};
  std::size_t begin_ = 0, end_ = 0;
};

GuardedServer::GuardedServer(ConnectionLimits limits)
    : limits_(limits), workers_(std::make_unique<ElasticTaskQueue>(limits.max_connections)) {
  set_payload_max_length(limits_.max_body_bytes);
  // cpp-httplib's default sets SO_REUSEPORT, which lets a second hive bind the same port.
  set_socket_options([](socket_t fd) {
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  set_pre_routing_handler([this](const Request& request, Response& response) {
    return guard_request(request, response);
  });
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    throw std::runtime_error(
        fmt::format("cannot set up the HTTP server: {}", std::strerror(errno)));
  }
}

GuardedServer::~GuardedServer() {
  stop();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  ::close(epoll_fd_);
  ::close(wake_fd_);
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

void GuardedServer::set_request_guard(HandlerWithResponse guard) {
  request_guard_ = std::move(guard);
}

void GuardedServer::close_connection_after_response() {
  if (t_close_after) *t_close_after = true;
}

int GuardedServer::bind(const std::string& host, int port) {
  const int bound = port == 0 ? bind_to_any_port(host) : (bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    throw std::runtime_error(
        fmt::format("cannot listen on {}:{}: {}", host, port, std::strerror(errno)));
  }
  listen_fd_ = svr_sock_;
  // cpp-httplib listens with a compiled-in backlog of 5: a burst of watchers would be dropped.
  ::listen(listen_fd_, kListenBacklog);
  ::fcntl(listen_fd_, F_SETFL, ::fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  return bound;
}

ConnectionStats GuardedServer::stats() const {
  std::lock_guard lock(mutex_);
  ConnectionStats stats = stats_;
  stats.waiting = waiting_.size();
  stats.served = connections_.size() - waiting_.size();
  return stats;
}

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

bool GuardedServer::serve() {
  if (listen_fd_ < 0) return false;
  epoll_event listen_event{EPOLLIN, {.fd = listen_fd_}};
  epoll_event wake_event{EPOLLIN, {.fd = wake_fd_}};
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &listen_event) != 0 ||
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &wake_event) != 0) {
    return false;
  }
  std::array<epoll_event, 128> events{};
  auto next_sweep = Clock::now() + kSweepInterval;
  bool failed = false;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    const int ready = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                                   static_cast<int>(kSweepInterval.count()));
    if (ready < 0 && errno != EINTR) {
      failed = true;
      break;
    }
    for (int i = 0; i < ready; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      if (fd == listen_fd_) {
        accept_connections();
      } else if (fd == wake_fd_) {
        std::uint64_t count = 0;
        [[maybe_unused]] auto drained = ::read(wake_fd_, &count, sizeof(count));
        take_returned_connections();
      } else {
        ConnectionPtr connection;
        {
          std::lock_guard lock(mutex_);
          auto found = connections_.find(fd);
          if (found != connections_.end() && found->second->waiting) connection = found->second;
        }
        if (connection) check_head(connection);
      }
    }
    if (Clock::now() >= next_sweep) {
      expire_waiting();
      next_sweep = Clock::now() + kSweepInterval;
    }
  }
  // Stopping (or failed): nobody waiting gets a worker any more.
  std::vector<ConnectionPtr> waiting;
  {
    std::lock_guard lock(mutex_);
    waiting.assign(waiting_.begin(), waiting_.end());
    waiting.insert(waiting.end(), returned_.begin(), returned_.end());
    returned_.clear();
  }
  for (const auto& connection : waiting) close_connection(connection);
  ::close(listen_fd_);  // new connections are refused by the kernel from now on
  listen_fd_ = -1;
  return !failed;
}

void GuardedServer::accept_connections() {
  for (;;) {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: free the oldest waiting connection's; with nothing waiting, use
        // the spare one to accept and refuse, or the level-triggered listener spins.
        if (make_room_for("")) continue;
        refuse_with_spare_descriptor();
      }
      return;  // EAGAIN: accepted everything there was
    }
    int client_port = 0;
    std::string client = address_of(address, client_port);
    const int yes = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));

    auto connection = std::make_shared<Connection>();
    connection->fd = fd;
    connection->client = std::move(client);
    connection->client_port = client_port;
    connection->waiting_since = Clock::now();
    bool admitted = false;
    {
      std::unique_lock lock(mutex_);
      ++stats_.accepted;
      const bool full = connections_.size() >= limits_.max_connections ||
                        per_client_[connection->client] >= limits_.max_connections_per_client;
      lock.unlock();
      admitted = !full || make_room_for(connection->client);
      lock.lock();
      if (admitted && !stopping_) {
        connections_[fd] = connection;
        ++per_client_[connection->client];
        connection->waiting = true;
        connection->waiting_position = waiting_.insert(waiting_.end(), connection);
      } else {
        if (per_client_[connection->client] == 0) per_client_.erase(connection->client);
        ++stats_.refused;
        admitted = false;
      }
    }
    if (!admitted) {
      send_and_forget(fd, refused_at_capacity());
      ::close(fd);
      continue;
    }
    watch(connection);
    check_head(connection);
  }
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

void GuardedServer::watch(const ConnectionPtr& connection) {
  // Edge-triggered: the head is only peeked at, so a level-triggered partial head would wake
  // the loop for ever; each new segment wakes it once.
  epoll_event event{EPOLLIN | EPOLLRDHUP | EPOLLET, {.fd = connection->fd}};
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, connection->fd, &event);
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

void GuardedServer::hand_to_worker(const ConnectionPtr& connection) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, connection->fd, nullptr);
  {
    std::lock_guard lock(mutex_);
    if (connection->closed) return;
    if (connection->waiting) {
      waiting_.erase(connection->waiting_position);
      connection->waiting = false;
    }
    if (!stopping_) {
      // Under the lock, so that stop() never joins the workers before this task is queued.
      workers_->enqueue([this, connection] { serve_connection(connection); });
      return;
    }
  }
  close_connection(connection);
}

void GuardedServer::serve_connection(const ConnectionPtr& connection) {
  ConnectionStream stream(*connection, limits_);
  t_close_after = &connection->close_after;
  bool keep = true;
  while (keep) {
    connection->reached_routing = false;
    connection->close_after = false;
    connection->head_budget = limits_.max_head_bytes;
    connection->read_deadline = Clock::now() + limits_.head_timeout;
    bool stopping = false;
    {
      std::lock_guard lock(mutex_);
      stopping = stopping_;
    }
    const bool last = stopping || ++connection->requests >= limits_.max_requests_per_connection;
    bool client_closes = false;
    bool written = false;
    try {
      written = process_request(stream, last, client_closes, [&](Request& request) {
        // Handlers that serve ranges (the /hf mirror) read the Range header themselves:
        // cpp-httplib 0.11.4 would cut every answer to the ranges again, and answers an
        // unsatisfiable one without "Content-Range: bytes */size".
        request.ranges.clear();
        connection->reached_routing = true;  // before routing: the body's deadline starts
        connection->read_deadline = Clock::now() + limits_.body_timeout;
      });
    } catch (...) {
      written = false;  // cpp-httplib failed outside a handler: drop the connection
    }
    // A request that never reached routing was malformed (400, 414, 416): do not trust the
    // rest of the byte stream.
    keep = written && !client_closes && !last && !connection->close_after &&
           connection->reached_routing;
    if (keep && !stream.buffered()) {
      t_close_after = nullptr;
      return return_to_waiting(connection);
    }
  }
  t_close_after = nullptr;
  if (connection->close_after) linger(*connection);
  close_connection(connection);
}

// After an answer given before the body was read: stop sending, then read and discard what
// the client is still sending for a moment. Closing with unread data would reset the
// connection, and the client, still writing its body, would never read the answer. Nothing
// read here is parsed.
void GuardedServer::linger(const Connection& connection) const {
  ::shutdown(connection.fd, SHUT_WR);
  const auto until = Clock::now() + kLingerTime;
  std::array<char, kStreamBufferSize> discard{};
  while (Clock::now() < until) {
    pollfd entry{connection.fd, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (::poll(&entry, 1, static_cast<int>(std::max<long long>(left, 1))) <= 0) return;
    const ssize_t n = ::recv(connection.fd, discard.data(), discard.size(), 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
  }
}

void GuardedServer::return_to_waiting(const ConnectionPtr& connection) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      returned_.push_back(connection);
      wake();
      return;
    }
  }
  close_connection(connection);
}

void GuardedServer::take_returned_connections() {
  std::vector<ConnectionPtr> returned;
  {
    std::lock_guard lock(mutex_);
    returned.swap(returned_);
    for (const auto& connection : returned) {
      connection->waiting = true;
      connection->head_started = false;
      connection->waiting_since = Clock::now();
      connection->waiting_position = waiting_.insert(waiting_.end(), connection);
    }
  }
  for (const auto& connection : returned) {
    watch(connection);
    check_head(connection);  // the next request may have arrived before it was watched
  }
}

void GuardedServer::close_connection(const ConnectionPtr& connection) {
  {
    std::lock_guard lock(mutex_);
    if (connection->closed) return;
    connection->closed = true;
    if (connection->waiting) {
      waiting_.erase(connection->waiting_position);
      connection->waiting = false;
    }
    connections_.erase(connection->fd);
    if (--per_client_[connection->client] == 0) per_client_.erase(connection->client);
    // Closed under the lock: stop() must never shut down a descriptor number already reused.
    ::close(connection->fd);
  }
}

void GuardedServer::refuse_with_spare_descriptor() {
  if (spare_fd_ >= 0) ::close(spare_fd_);
  const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    send_and_forget(fd, refused_at_capacity());
    ::close(fd);
    std::lock_guard lock(mutex_);
    ++stats_.refused;
  }
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void GuardedServer::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(wake_fd_, &one, sizeof(one));
}

void GuardedServer::stop() {
  std::call_once(stop_once_, [this] {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      // Every served connection's next read or write fails at once; its worker then closes it.
      for (const auto& [fd, connection] : connections_) {
        if (!connection->waiting) ::shutdown(fd, SHUT_RDWR);
      }
      wake();
    }
    svr_sock_ = INVALID_SOCKET;  // cpp-httplib's content providers stop at the next chunk
    workers_->shutdown();
  });
}

}  // namespace rbee::hive
