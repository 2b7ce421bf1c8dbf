#pragma once
// StreamTickets: short-lived credentials for one job's event stream. A browser's EventSource
// cannot send an Authorization header, so a client holding the API token asks for a ticket
// (POST /v1/jobs/{id}/stream-ticket) and puts it in the stream's URL instead.

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace rbee::hive {

// Thread-safe. A ticket opens the stream of its job only, any number of times (EventSource
// reconnects by itself) until it expires; expired tickets are forgotten. At most
// `max_tickets` are held: beyond that issue() refuses until some expire.
class StreamTickets {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kLifetime{60};

  explicit StreamTickets(std::size_t max_tickets = 10000) : max_tickets_(max_tickets) {}

  // nullopt when max_tickets unexpired tickets are held already.
  std::optional<std::string> issue(const std::string& job_id, Clock::time_point now = Clock::now());
  bool admits(const std::string& ticket, const std::string& job_id,
              Clock::time_point now = Clock::now()) const;

 private:
  struct Grant {
    std::string job_id;
    Clock::time_point expires;
  };
  const std::size_t max_tickets_;
  mutable std::mutex mutex_;
  std::map<std::string, Grant> tickets_;
};

}  // namespace rbee::hive
