#include "rbee/hive/stream_tickets.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <stdexcept>

#include <fmt/format.h>

namespace rbee::hive {
namespace {

std::string random_ticket() {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
    throw std::runtime_error("no randomness for a stream ticket");
  std::string ticket = "st-";
  for (unsigned char byte : bytes) ticket += fmt::format("{:02x}", byte);
  return ticket;
}

}  // namespace

std::optional<std::string> StreamTickets::issue(const std::string& job_id, Clock::time_point now) {
  std::string ticket = random_ticket();
  std::lock_guard lock(mutex_);
  std::erase_if(tickets_, [now](const auto& entry) { return entry.second.expires <= now; });
  if (tickets_.size() >= max_tickets_) return std::nullopt;
  tickets_[ticket] = {job_id, now + kLifetime};
  return ticket;
}

bool StreamTickets::admits(const std::string& ticket, const std::string& job_id,
                           Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  const auto found = tickets_.find(ticket);
  return found != tickets_.end() && found->second.job_id == job_id && found->second.expires > now;
}

}  // namespace rbee::hive
