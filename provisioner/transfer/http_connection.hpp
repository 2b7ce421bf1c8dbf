#pragma once
// HttpConnection (internal): the provisioner's one HTTP client, on libcurl (DESIGN §14). Every
// listing, resolve and transfer goes through perform(). One object is one libcurl easy handle
// with its own multi handle (or an HttpSession's, shared), so the TCP/TLS connections it opened
// stay alive for its next request (a ConnectionPool lends them out), and a request can be woken
// at once from another thread: cancellation is a curl_multi_wakeup, not a poll loop that
// notices late.
//
// What libcurl does for us here, and what it must not do:
// - reads of up to HttpRequest::receive_buffer bytes per recv (cpp-httplib read 4 KiB), HTTP/2 over
// TLS
//   when the server offers it (ALPN), proxies (set explicitly from ProxySettings, never from
//   libcurl's own reading of the environment, see proxy_settings_from_environment);
// - it never follows a redirect: HubClient does, to keep the token on the Hub's origin (§5);
// - it never decompresses a transfer: only listings ask for compression, and their size is
//   bounded after decompression by the caller.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rbee/provisioner/hub_client.hpp"

namespace rbee::provisioner {

// The answer's status line and headers, before any byte of its body.
struct HttpResponseHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  // The first header of that name (case-insensitive), or "" when absent.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

struct HttpRequest {
  Url url;
  bool head = false;  // HEAD instead of GET
  HttpHeaders headers;
  bool accept_compressed = false;  // listings only: libcurl then inflates gzip, br or zstd
  // A connection that delivers fewer than stall_min_bytes (headers included) in stall_timeout
  // is given up as stalled; a server that never answers too.
  std::chrono::milliseconds stall_timeout{std::chrono::seconds(30)};
  std::uint64_t stall_min_bytes = 16 * 1024;
  long receive_buffer = 1L << 20;  // bytes per read at most (libcurl's CURLOPT_BUFFERSIZE)
  // Called once per answer, before its body; false ends the request (the body is not read).
  std::function<bool(const HttpResponseHead&)> on_head;
  // Called with the body as it arrives, in pieces of up to receive_buffer; false ends it.
  std::function<bool(const char* data, std::size_t length)> on_body;
};

enum class HttpOutcome {
  complete,   // the whole answer arrived (any status: see head.status)
  aborted,    // on_head or on_body returned false
  stalled,    // too few bytes for stall_timeout
  cancelled,  // the stop token was requested
  failed,     // a transport error: DNS, connect, TLS, reset, a body that ended early…
};

struct HttpResult {
  HttpOutcome outcome = HttpOutcome::failed;
  HttpResponseHead head;  // status 0 when no answer arrived
  std::string error;      // for `failed`: libcurl's explanation, proxy credentials redacted
};

// An answer whose body is kept in memory (a listing, a token, a reconstruction): small by
// nature, so bounded as it arrives (after any decompression: a gzip bomb ends at the cap).
struct CappedAnswer {
  HttpResult result;
  std::string body;        // the body of a 200; any other status's body is not kept
  bool too_large = false;  // the body passed the cap and the request ended there
};

// Several connections' requests over one libcurl multi handle, so that the requests of a job to
// an HTTP/2 server share its connections (DESIGN §8: many small files over one HTTP/2
// connection): CURLPIPE_MULTIPLEX, and a request waits for a connection in progress to learn
// whether it multiplexes before opening another (an HTTP/1.1 server still gets one connection
// per request in flight, as before).
//
// libcurl serves a multi handle from one thread at a time. The first thread whose request is in
// flight drives every request until its own ends, then hands the role to a thread still
// waiting. A request's callbacks may so run on another thread than its own while its own waits
// in perform(): its state is touched by one thread at a time. What they do stays small (one
// small file's write; the hash runs on the file's HashPipeline thread), so no request waits
// long for another's.
class HttpSession {
 public:
  HttpSession();
  ~HttpSession();
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

 private:
  friend class HttpConnection;
  struct Shared;
  std::unique_ptr<Shared> shared_;
};

class HttpConnection {
 public:
  // Alone, or with its requests in `session` (which must outlive it).
  explicit HttpConnection(const HubSettings& settings, HttpSession* session = nullptr);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Blocks until the answer is complete, aborted, stalled, failed, or `stop` is requested
  // (then within moments, from any thread). One request at a time per object. What on_head or
  // on_body throws ends the transfer and is rethrown here, after libcurl has let go of it.
  HttpResult perform(const HttpRequest& request, const std::stop_token& stop);

  // perform() keeping a 200's body, up to `max_bytes` (the request's on_head and on_body are
  // this function's).
  CappedAnswer perform_capped(HttpRequest request, std::size_t max_bytes,
                              const std::stop_token& stop);

 private:
  void set_fixed_options();

  struct Handles;
  const HubSettings& settings_;
  HttpSession* session_;
  std::unique_ptr<Handles> handles_;
};

}  // namespace rbee::provisioner
