#pragma once
// StreamTickets: short-lived credentials for one job's event stream. A browser's EventSource
// cannot send an Authorization header, so a client holding the API token asks for a ticket
// (POST /v1/jobs/{id}/stream-ticket) and puts it in the stream's URL instead.

#include <chrono>
#include <map>
#include <mutex>
#include <string>

namespace rbee::hive {

// Thread-safe. A ticket opens the stream of its job only, any number of times (EventSource
// reconnects by itself) until it expires; expired tickets are forgotten.
class StreamTickets {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kLifetime{60};

  std::string issue(const std::string& job_id, Clock::time_point now = Clock::now());
  bool admits(const std::string& ticket, const std::string& job_id,
              Clock::time_point now = Clock::now()) const;

 private:
  struct Grant {
    std::string job_id;
    Clock::time_point expires;
  };
  mutable std::mutex mutex_;
  std::map<std::string, Grant> tickets_;
};

}  // namespace rbee::hive
