#pragma once
// RawConnection: one TCP connection to a loopback port, byte for byte, for tests that must send
// what no HTTP client library would (partial heads, smuggled requests, bodies after a refusal).

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace rbee::testing {

class RawConnection {
 public:
  explicit RawConnection(int port);  // throws std::runtime_error when it cannot connect
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // False once the peer has closed or reset the connection.
  bool send(std::string_view bytes);
  // Everything received until the peer closes, or until `timeout` passes without a byte.
  std::string read_until_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Whether the peer closed (EOF or reset) within `timeout`; discards what arrives.
  bool closed_within(std::chrono::milliseconds timeout);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// The resident set size of a process, in bytes (from /proc/<pid>/status).
std::uint64_t resident_bytes(int pid);

}  // namespace rbee::testing
