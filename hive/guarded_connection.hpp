#pragma once
// What the two files of GuardedServer share (internal): guarded_server.cpp runs the accept loop
// and the connections' lives; connection_policy.cpp decides what a connection may do (a head
// within its limits, a body the hive will read, who is evicted at a cap).

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <string>
#include <string_view>

#include "rbee/hive/guarded_server.hpp"

namespace rbee::hive {

using Clock = std::chrono::steady_clock;

inline constexpr std::size_t kStreamBufferSize = 16 * 1024;

// Best effort on a non-blocking socket that is about to be closed: what does not fit now is
// dropped, the close ends the connection either way.
void send_and_forget(int fd, std::string_view text);

// The peer's (or this end's) address as text, and its port.
std::string address_of(const sockaddr_storage& address, int& port);

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

}  // namespace rbee::hive
