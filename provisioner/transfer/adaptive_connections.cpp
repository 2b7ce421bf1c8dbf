#include "adaptive_connections.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace rbee::provisioner {
namespace {

std::string megabytes_per_second(double rate) {
  return fmt::format("{:.0f} MB/s", rate / 1e6);
}

}  // namespace

AdaptiveConnections::AdaptiveConnections(int ceiling, int start)
    : ceiling_(std::max(1, ceiling)), target_(std::clamp(start, 1, ceiling_)) {
  if (target_ == ceiling_) settle(target_, fmt::format("the ceiling of {}", ceiling_));
}

void AdaptiveConnections::sample(Clock::time_point now, std::uint64_t total_bytes, int open) {
  if (settled_) return;
  if (open < target_) {  // still opening this step's connections (or the budget is short)
    measuring_ = false;
    return;
  }
  const auto per_connection = [this](std::uint64_t bytes) {
    return bytes * static_cast<std::uint64_t>(target_);
  };
  if (!measuring_) {
    measuring_ = true;
    settled_step_ = false;
    level_since_ = now;
    level_bytes_ = total_bytes;
    return;
  }
  if (!settled_step_) {
    const auto since = now - level_since_;
    const bool ramped =
        total_bytes - std::min(total_bytes, level_bytes_) >= per_connection(kSettleBytes);
    if (since < kSettle || (!ramped && since < kMaxSettle)) return;
    settled_step_ = true;
    window_start_ = now;
    window_bytes_ = total_bytes;
    return;
  }
  const auto length = now - window_start_;
  const std::uint64_t bytes = total_bytes - std::min(total_bytes, window_bytes_);
  if (length < kWindow || (bytes < per_connection(kWindowBytes) && length < kMaxWindow)) return;
  judge(static_cast<double>(bytes) / std::chrono::duration<double>(length).count());
}

void AdaptiveConnections::judge(double rate) {
  last_rate_ = rate;
  measuring_ = false;
  if (previous_count_ > 0 && rate < previous_rate_ * kMinGain) {
    settle(previous_count_,
           fmt::format("more stopped helping: {} gave {}, {} gave {}", previous_count_,
                       megabytes_per_second(previous_rate_), target_, megabytes_per_second(rate)));
    last_rate_ = previous_rate_;
    return;
  }
  if (target_ >= ceiling_) {
    settle(target_, fmt::format("the ceiling of {}, at {}", ceiling_, megabytes_per_second(rate)));
    return;
  }
  // A step that scaled almost linearly (each new connection as fast as the old ones: a
  // per-connection cap) says the next doubling will too: take two at once. So does a first
  // step whose connections are each slow: a cap is the likely reason, and the steps of a slow
  // server are long.
  const bool linear = previous_count_ > 0
                          ? rate / previous_rate_ >= kLinearShare * target_ / previous_count_
                          : rate / target_ < kSlowConnection;
  previous_count_ = target_;
  previous_rate_ = rate;
  target_ = std::min(ceiling_, target_ * (linear ? 4 : 2));
}

void AdaptiveConnections::refused(int others_open) {
  const int cap = std::max(1, others_open);
  if (cap >= ceiling_ && settled_) return;
  ceiling_ = std::min(ceiling_, cap);
  settle(std::min(target_, ceiling_),
         fmt::format("the server refused a connection beyond {} (429/503)", ceiling_));
}

void AdaptiveConnections::settle(int count, std::string reason) {
  target_ = count;
  settled_ = true;
  reason_ = std::move(reason);
}

}  // namespace rbee::provisioner
