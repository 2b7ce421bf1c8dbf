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

#include "guarded_connection.hpp"
#include "rbee/hive/api_json.hpp"
#include "rbee/hive/elastic_task_queue.hpp"

namespace rbee::hive {

using Clock = std::chrono::steady_clock;
using httplib::Request;
using httplib::Response;

namespace {

constexpr int kListenBacklog = 1024;
constexpr auto kSweepInterval = std::chrono::milliseconds(250);
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

}  // namespace

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

namespace {
thread_local bool* t_close_after = nullptr;  // the served connection's close_after flag
}  // namespace

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

void GuardedServer::watch(const ConnectionPtr& connection) {
  // Edge-triggered: the head is only peeked at, so a level-triggered partial head would wake
  // the loop for ever; each new segment wakes it once.
  epoll_event event{EPOLLIN | EPOLLRDHUP | EPOLLET, {.fd = connection->fd}};
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, connection->fd, &event);
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
