#pragma once
// HiveClient: the operator commands' side of the hive's HTTP API (DESIGN §3), with errors a
// person understands.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "rbee/cli/sse_parser.hpp"

namespace rbee::cli {

enum class ClientErrorKind {
  unreachable,   // nothing answers, or the connection dropped
  unauthorized,  // 401: no token, or the wrong one
  not_found,     // 404: no such job or model
  rejected,      // any other 4xx/5xx, with the hive's own message
  protocol,      // an answer that is not what the API promises
};

class ClientError : public std::runtime_error {
 public:
  ClientError(ClientErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  ClientErrorKind kind() const { return kind_; }

 private:
  ClientErrorKind kind_;
};

bool is_terminal_line(const std::string& data);

// Thread-safe except that one stream() runs at a time; abort() may come from any thread.
class HiveClient {
 public:
  // `base_url` like "http://127.0.0.1:7835"; `token` empty for a hive without one.
  HiveClient(std::string base_url, std::string token);

  const std::string& url() const { return base_url_; }

  // Each throws ClientError; the message names the hive and says what to do.
  nlohmann::json get(const std::string& path) const;
  nlohmann::json submit(const nlohmann::json& job) const;  // POST /v1/jobs → {"job_id",…}
  nlohmann::json cancel(const std::string& job_id) const;  // DELETE /v1/jobs/{id}

  // Reads the job's stream after event `last_id` (0: from the start), calling on_message for
  // each data message and advancing last_id, until the terminal line, which it returns. When
  // the connection drops first it throws ClientError(unreachable): call again to resume.
  std::string stream(const std::string& job_id, std::uint64_t& last_id,
                     const std::function<void(const StreamMessage&)>& on_message);
  // Ends a stream() in progress at once (it throws unreachable).
  void abort();

 private:
  std::unique_ptr<httplib::Client> make_client() const;
  [[noreturn]] void throw_unreachable(httplib::Error error) const;
  [[noreturn]] void throw_for_status(int status, const std::string& body,
                                     const std::string& what) const;
  // The response when it has `status`; otherwise throws the ClientError that fits.
  const httplib::Response& expect(const httplib::Result& result, int status,
                                  const std::string& what) const;

  std::string base_url_;
  std::string token_;
  std::mutex streaming_mutex_;
  httplib::Client* streaming_ = nullptr;  // the client of the stream in progress
  std::atomic<bool> aborted_{false};
};

}  // namespace rbee::cli
