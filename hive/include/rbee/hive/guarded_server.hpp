#pragma once
// GuardedServer: cpp-httplib's request handling behind the hive's own accept loop, so that no
// client can hold, exhaust or confuse the daemon (DESIGN §9, §12).
//
// cpp-httplib 0.11.4 times out each recv on its own (a client that sends a byte every few
// seconds holds a thread for ever), bounds neither connections nor headers, reads chunked and
// compressed bodies whole, keeps a connection alive after answering before the body was read,
// and cannot interrupt a connection at shutdown. Here:
//  - a connection waits for its request head in one epoll loop and holds no thread; the head
//    must be complete within `head_timeout` and `max_head_bytes`, or the connection is closed;
//  - only a complete head gets a worker thread, which runs cpp-httplib's process_request on
//    this class's own Stream (deadlines on every read, bounded writes);
//  - connections are capped in total and per client address; at a cap the connection that has
//    waited longest for its head is dropped to make room, so a flood of slow clients loses its
//    own connections, not the next request;
//  - a body that is chunked, compressed or larger than `max_body_bytes` is refused before it is
//    read, and every answer given before the body was read closes the connection;
//  - stop() closes the listener and shuts every connection down, so it returns promptly.

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <httplib.h>

namespace rbee::hive {

class ElasticTaskQueue;

struct ConnectionLimits {
  std::size_t max_connections = 1024;              // open at once, waiting and served
  std::size_t max_connections_per_client = 512;    // from one client address
  std::chrono::milliseconds head_timeout{10000};   // a request head must arrive within this
  std::chrono::milliseconds idle_timeout{5000};    // keep-alive wait for the next request
  std::chrono::milliseconds body_timeout{30000};   // a (small) body must arrive within this
  std::chrono::milliseconds write_timeout{15000};  // a client that reads nothing for this long
  std::size_t max_head_bytes = 64 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_requests_per_connection = 10000;
};

// Counters for /metrics and tests. All monotonic but `waiting` and `served`.
struct ConnectionStats {
  std::size_t waiting = 0;  // open, waiting for a request head (no thread)
  std::size_t served = 0;   // open, a worker thread serving a request or stream
  std::uint64_t accepted = 0;
  std::uint64_t evicted = 0;    // dropped at a cap to make room for a newer connection
  std::uint64_t refused = 0;    // answered 503 at a cap with nothing to evict
  std::uint64_t timed_out = 0;  // head not complete within head_timeout
};

// Lifecycle: bind() once, serve() on a thread of the caller's (it blocks until stop()), stop()
// from any other thread. Register routes, the request guard and the logger before serve().
class GuardedServer : public httplib::Server {
 public:
  explicit GuardedServer(ConnectionLimits limits);
  ~GuardedServer() override;

  // Runs once the head is read and the body limits passed, before the body is read. Returning
  // Handled answers with `response` and closes the connection (its body stays unread).
  void set_request_guard(HandlerWithResponse guard);

  // Throws std::runtime_error when the address cannot be bound; returns the bound port.
  int bind(const std::string& host, int port);
  // Accepts and serves until stop(). Returns false when listening failed.
  bool serve();
  // Idempotent; returns when every connection is closed and every worker thread joined.
  void stop();

  ConnectionStats stats() const;

  // For a handler on its worker thread: close this connection once the response is written.
  static void close_connection_after_response();

 private:
  struct Connection;
  using ConnectionPtr = std::shared_ptr<Connection>;
  class ConnectionStream;

  HandlerResponse guard_request(const httplib::Request& request, httplib::Response& response);
  void accept_connections();
  void admit(int fd);
  bool make_room_for(const std::string& client);
  void watch(const ConnectionPtr& connection);
  void check_head(const ConnectionPtr& connection);
  void expire_waiting();
  void hand_to_worker(const ConnectionPtr& connection);
  void serve_connection(const ConnectionPtr& connection);
  void return_to_waiting(const ConnectionPtr& connection);
  void linger(const Connection& connection) const;
  void close_connection(const ConnectionPtr& connection);
  void take_returned_connections();
  void refuse_with_spare_descriptor();
  void wake();

  const ConnectionLimits limits_;
  HandlerWithResponse request_guard_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int spare_fd_ = -1;  // a descriptor kept in reserve to refuse connections at EMFILE
  std::unique_ptr<ElasticTaskQueue> workers_;

  mutable std::mutex mutex_;
  bool stopping_ = false;
  std::map<int, ConnectionPtr> connections_;       // every open connection, by descriptor
  std::map<std::string, std::size_t> per_client_;  // open connections by client address
  std::list<ConnectionPtr> waiting_;               // waiting for a head, oldest first
  std::vector<ConnectionPtr> returned_;            // keep-alive connections back from workers
  ConnectionStats stats_;
  std::once_flag stop_once_;
};

}  // namespace rbee::hive
