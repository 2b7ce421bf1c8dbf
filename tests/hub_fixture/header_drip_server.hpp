#pragma once
// HeaderDripServer: a hostile HTTP server that answers every request with its status line and
// headers one byte at a time, forever (never a blank line, never a body). A client's per-read
// timeout never fires against it: only an abort of the request ends the wait.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace rbee::testing {

class HeaderDripServer {
 public:
  explicit HeaderDripServer(std::chrono::milliseconds interval = std::chrono::milliseconds(200));
  ~HeaderDripServer();  // closes every connection
  HeaderDripServer(const HeaderDripServer&) = delete;
  HeaderDripServer& operator=(const HeaderDripServer&) = delete;

  std::string url(const std::string& path = "/blob") const;
  int connections() const { return connections_.load(); }  // accepted so far
  std::uint64_t bytes_dripped() const { return bytes_.load(); }

 private:
  void accept_loop();
  void drip(int fd);

  std::chrono::milliseconds interval_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<std::uint64_t> bytes_{0};
  std::mutex mutex_;
  std::vector<int> open_;
  std::vector<std::thread> drippers_;
  std::thread acceptor_;
};

}  // namespace rbee::testing
