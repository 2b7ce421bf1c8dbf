#pragma once
// ConnectionPool: idle HTTP connections to the Hub and its CDN, by origin, so the files of a
// repo reuse connections instead of paying a TCP (and TLS) handshake each. A repo of hundreds
// of small files is otherwise dominated by round trips. Its connections share one HttpSession:
// to an HTTP/2 server the requests of all of them, in flight at once, share one connection.

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace rbee::provisioner {

class HubClient;
class HttpConnection;  // the client layer (internal, on libcurl)
class HttpSession;
struct Url;

// Thread-safe. A lease is used by one thread and goes back to the pool when it ends: a
// connection whose request ended mid-body was closed by the client layer, which reconnects
// on the next request.
class ConnectionPool {
 public:
  class Lease {
   public:
    Lease(ConnectionPool* pool, std::string origin, std::unique_ptr<HttpConnection> connection);
    Lease(Lease&&) noexcept;
    Lease& operator=(Lease&&) = delete;
    ~Lease();

    HttpConnection& operator*() const { return *connection_; }
    HttpConnection* operator->() const { return connection_.get(); }

   private:
    ConnectionPool* pool_;
    std::string origin_;
    std::unique_ptr<HttpConnection> connection_;
  };

  // At most `max_idle` idle connections are kept, each for `max_idle_time` (less than common
  // server keep-alive timeouts, so a kept connection is rarely one the server has closed; a
  // closed one is reconnected transparently anyway).
  explicit ConnectionPool(const HubClient& hub, std::size_t max_idle = 16,
                          std::chrono::milliseconds max_idle_time = std::chrono::seconds(4));
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // An idle connection to `url`'s origin, or a new one.
  Lease take(const Url& url);
  std::size_t idle() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Idle {
    std::unique_ptr<HttpConnection> connection;
    Clock::time_point since;
  };
  void put(const std::string& origin, std::unique_ptr<HttpConnection> connection);

  const HubClient& hub_;
  const std::size_t max_idle_;
  const std::chrono::milliseconds max_idle_time_;
  std::unique_ptr<HttpSession> session_;  // outlives the connections below
  mutable std::mutex mutex_;
  std::multimap<std::string, Idle> idle_;
};

}  // namespace rbee::provisioner
