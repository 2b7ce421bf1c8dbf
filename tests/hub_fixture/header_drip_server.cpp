#include "hub_fixture/header_drip_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

namespace rbee::testing {

HeaderDripServer::HeaderDripServer(std::chrono::milliseconds interval) : interval_(interval) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::listen(listener_, 16) != 0 ||
      ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error("header drip server: cannot listen");
  }
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

HeaderDripServer::~HeaderDripServer() {
  stopping_ = true;
  ::shutdown(listener_, SHUT_RDWR);
  acceptor_.join();
  {
    std::lock_guard lock(mutex_);
    for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& dripper : drippers_) dripper.join();
  ::close(listener_);
}

std::string HeaderDripServer::url(const std::string& path) const {
  return fmt::format("http://127.0.0.1:{}{}", port_, path);
}

void HeaderDripServer::accept_loop() {
  while (!stopping_) {
    const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // shut down (stopping_) or a transient error
    ++connections_;
    std::lock_guard lock(mutex_);
    open_.push_back(fd);
    drippers_.emplace_back([this, fd] { drip(fd); });
  }
}

void HeaderDripServer::drip(int fd) {
  // Read the request head, then drip an endless header block.
  std::string head;
  char buffer[4096];
  while (head.find("\r\n\r\n") == std::string::npos && !stopping_) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    head.append(buffer, static_cast<std::size_t>(n));
  }
  const std::string_view prefix = "HTTP/1.1 200 OK\r\nX-Drip: ";
  for (std::size_t i = 0; !stopping_; ++i) {
    const char byte = i < prefix.size() ? prefix[i] : 'x';
    if (::send(fd, &byte, 1, MSG_NOSIGNAL) != 1) break;
    ++bytes_;
    std::this_thread::sleep_for(interval_);
  }
  std::lock_guard lock(mutex_);
  std::erase(open_, fd);
  ::close(fd);
}

}  // namespace rbee::testing
