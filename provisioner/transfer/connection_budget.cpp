#include "rbee/provisioner/connection_budget.hpp"

#include <chrono>

namespace rbee::provisioner {

ConnectionBudget::ConnectionBudget(std::size_t capacity, ConnectionBudget* parent)
    : capacity_(capacity == 0 ? 1 : capacity), parent_(parent) {}

bool ConnectionBudget::try_acquire() {
  std::lock_guard lock(mutex_);
  if (in_use_ >= capacity_) return false;
  if (parent_ && !parent_->try_acquire()) return false;
  ++in_use_;
  return true;
}

bool ConnectionBudget::acquire(const std::stop_token& stop) {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stop.stop_requested()) return false;
    if (in_use_ < capacity_ && (!parent_ || parent_->try_acquire())) {
      ++in_use_;
      return true;
    }
    // A parent's release does not wake this budget's waiters: look again now and then.
    freed_.wait_for(lock, stop, std::chrono::milliseconds(20), [] { return false; });
  }
}

void ConnectionBudget::release() {
  {
    std::lock_guard lock(mutex_);
    if (in_use_ > 0) --in_use_;
  }
  freed_.notify_one();
  if (parent_) parent_->release();
}

std::size_t ConnectionBudget::in_use() const {
  std::lock_guard lock(mutex_);
  return in_use_;
}

}  // namespace rbee::provisioner
