#include "rbee/provisioner/connection_pool.hpp"

#include "http_connection.hpp"
#include "rbee/provisioner/hub_client.hpp"

namespace rbee::provisioner {

ConnectionPool::Lease::Lease(ConnectionPool* pool, std::string origin,
                             std::unique_ptr<HttpConnection> connection)
    : pool_(pool), origin_(std::move(origin)), connection_(std::move(connection)) {}

ConnectionPool::Lease::Lease(Lease&& other) noexcept = default;

ConnectionPool::Lease::~Lease() {
  if (pool_ && connection_) pool_->put(origin_, std::move(connection_));
}

ConnectionPool::ConnectionPool(const HubClient& hub, std::size_t max_idle,
                               std::chrono::milliseconds max_idle_time)
    : hub_(hub),
      max_idle_(max_idle),
      max_idle_time_(max_idle_time),
      session_(std::make_unique<HttpSession>()) {}

ConnectionPool::~ConnectionPool() = default;

ConnectionPool::Lease ConnectionPool::take(const Url& url) {
  const std::string origin = url.origin();
  std::unique_ptr<HttpConnection> reused;
  {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    std::erase_if(idle_,
                  [&](const auto& entry) { return now - entry.second.since > max_idle_time_; });
    if (const auto found = idle_.find(origin); found != idle_.end()) {
      reused = std::move(found->second.connection);
      idle_.erase(found);
    }
  }
  if (!reused) reused = std::make_unique<HttpConnection>(hub_.settings(), session_.get());
  return Lease(this, origin, std::move(reused));
}

void ConnectionPool::put(const std::string& origin, std::unique_ptr<HttpConnection> connection) {
  std::lock_guard lock(mutex_);
  if (idle_.size() >= max_idle_) return;  // enough kept: this one closes
  idle_.emplace(origin, Idle{std::move(connection), Clock::now()});
}

std::size_t ConnectionPool::idle() const {
  std::lock_guard lock(mutex_);
  return idle_.size();
}

}  // namespace rbee::provisioner
