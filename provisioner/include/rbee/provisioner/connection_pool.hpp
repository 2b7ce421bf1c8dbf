#pragma once
// ConnectionPool: idle keep-alive connections to the Hub and its CDN, by origin, so the files
// of a repo reuse connections instead of paying a TCP (and TLS) handshake each. A repo of
// hundreds of small files is otherwise dominated by round trips.

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <httplib.h>

namespace rbee::provisioner {

class HubClient;
struct Url;

// Thread-safe. A lease is used by one thread; it goes back to the pool only when the caller
// says its request ended cleanly (keep()), since a connection left mid-body cannot be reused.
class ConnectionPool {
 public:
  class Lease {
   public:
    Lease(ConnectionPool* pool, std::string origin, std::unique_ptr<httplib::Client> client)
        : pool_(pool), origin_(std::move(origin)), client_(std::move(client)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = default;
    ~Lease();

    httplib::Client& operator*() const { return *client_; }
    httplib::Client* operator->() const { return client_.get(); }
    void keep() { keep_ = true; }  // the request ended cleanly: the connection may serve another

   private:
    ConnectionPool* pool_;
    std::string origin_;
    std::unique_ptr<httplib::Client> client_;
    bool keep_ = false;
  };

  // At most `max_idle` idle connections are kept, each for `max_idle_time` (less than common
  // server keep-alive timeouts, so a kept connection is rarely one the server has closed; a
  // closed one is reconnected transparently by the client anyway).
  explicit ConnectionPool(const HubClient& hub, std::size_t max_idle = 16,
                          std::chrono::milliseconds max_idle_time = std::chrono::seconds(4));
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // An idle connection to `url`'s origin, or a new one, configured by the HubClient.
  Lease take(const Url& url);
  std::size_t idle() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Idle {
    std::unique_ptr<httplib::Client> client;
    Clock::time_point since;
  };
  void put(const std::string& origin, std::unique_ptr<httplib::Client> client);

  const HubClient& hub_;
  const std::size_t max_idle_;
  const std::chrono::milliseconds max_idle_time_;
  mutable std::mutex mutex_;
  std::multimap<std::string, Idle> idle_;
};

}  // namespace rbee::provisioner
