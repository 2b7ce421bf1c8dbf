#pragma once
// ConnectionBudget: how many download connections may be open at once. A job's budget draws
// on the hive's (its parent), so files in parallel and ranges of large files share one limit
// per job and one across jobs.

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <stop_token>

namespace rbee::provisioner {

class ConnectionBudget {
 public:
  explicit ConnectionBudget(std::size_t capacity, ConnectionBudget* parent = nullptr);
  ConnectionBudget(const ConnectionBudget&) = delete;
  ConnectionBudget& operator=(const ConnectionBudget&) = delete;

  // One connection here and in every parent, or none; never waits.
  bool try_acquire();
  // Waits for one; false when `stop` was requested first.
  bool acquire(const std::stop_token& stop);
  void release();

  std::size_t capacity() const { return capacity_; }
  std::size_t in_use() const;

 private:
  const std::size_t capacity_;
  ConnectionBudget* parent_;
  mutable std::mutex mutex_;
  std::condition_variable_any freed_;
  std::size_t in_use_ = 0;
};

// Holds one connection of a budget until it goes away.
class ConnectionLease {
 public:
  ConnectionLease() = default;
  explicit ConnectionLease(ConnectionBudget& budget) : budget_(&budget) {}
  ~ConnectionLease() {
    if (budget_) budget_->release();
  }
  ConnectionLease(ConnectionLease&& other) noexcept : budget_(other.budget_) {
    other.budget_ = nullptr;
  }
  ConnectionLease& operator=(ConnectionLease&&) = delete;
  ConnectionLease(const ConnectionLease&) = delete;
  ConnectionLease& operator=(const ConnectionLease&) = delete;

 private:
  ConnectionBudget* budget_ = nullptr;
};

}  // namespace rbee::provisioner
