#pragma once
// AdaptiveConnections (internal): how many connections one ranged download keeps open
// (DESIGN §14). Users should not have to find the number that beats a CDN's per-connection cap,
// and the number that helps against one server hurts against another.
//
// It starts small and doubles the count while the aggregate speed still grows by kMinGain per
// step (quadruples it while the speed grows in proportion, as under a per-connection cap, and
// after a first step whose connections are each slower than kSlowConnection); when
// a step stops paying it goes back to the count before it and stays there. A
// 429/503 from one connection while others run caps the count at the connections that were
// being served, for the rest of the download.
//
// A step is judged on a window after a settling time, and both are measured in bytes as well as
// time: new connections first pay TCP slow start and a range's first bytes, and a server that
// caps each connection often sends in bursts (nginx's limit_rate: a second's worth at once, then
// a burst at each tick of its one-second clock), so a quarter second at 300 KB/s a connection
// sees bursts or nothing, not the rate. Settling lasts kSettle and until each connection had
// kSettleBytes (at most kMaxSettle); the window lasts kWindow and until each connection brought
// kWindowBytes, or kMaxWindow, whole seconds, which hold as many burst ticks as seconds. On
// loopback or a LAN the byte counts come within the times, and a gigabyte file still settles
// within its first second; at 300 KB/s a step takes about 3 s.
//
// Pure logic with no clock of its own: the coordinator feeds it samples, which is also how the
// unit tests drive it. Not thread-safe: the ranged download's coordinator thread owns it.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace rbee::provisioner {

class AdaptiveConnections {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kSettle = std::chrono::milliseconds(100);
  static constexpr auto kMaxSettle = std::chrono::seconds(1);
  static constexpr std::uint64_t kSettleBytes = 256 << 10;  // per connection
  static constexpr auto kWindow = std::chrono::milliseconds(250);
  static constexpr auto kMaxWindow = std::chrono::seconds(2);
  static constexpr std::uint64_t kWindowBytes = 1 << 20;  // per connection
  static constexpr double kMinGain = 1.15;  // a step must bring 15% more, or it goes back
  // A step whose new connections each brought at least this share of an old one's speed
  // scaled linearly: the next step quadruples instead of doubling.
  static constexpr double kLinearShare = 0.8;
  // A first step whose connections each bring less than this (bytes per second) quadruples.
  static constexpr double kSlowConnection = 4e6;

  // `ceiling`: the most the job and the hive allow for this file (at least 1).
  AdaptiveConnections(int ceiling, int start);

  // Total body bytes received so far by all connections, and how many are open now.
  void sample(Clock::time_point now, std::uint64_t total_bytes, int open);
  // A connection was refused with 429 or 503 while `others_open` others were being served.
  void refused(int others_open);

  int target() const { return target_; }
  int ceiling() const { return ceiling_; }  // lowered for good by a refusal
  bool settled() const { return settled_; }
  // Why it settled, for the narration ("more stopped helping: 16 gave 812 MB/s, 32 gave 820").
  const std::string& reason() const { return reason_; }
  // The aggregate speed of the last measured window, in bytes per second.
  double last_rate() const { return last_rate_; }

 private:
  void judge(double rate);
  void settle(int count, std::string reason);

  int ceiling_;
  int target_;
  bool settled_ = false;
  std::string reason_;
  double last_rate_ = 0;

  // The step being measured: since when the target's connections are all open and the bytes
  // then, and the start of its window (once settled) and the bytes then.
  bool measuring_ = false;
  bool settled_step_ = false;
  Clock::time_point level_since_;
  std::uint64_t level_bytes_ = 0;
  Clock::time_point window_start_;
  std::uint64_t window_bytes_ = 0;
  int previous_count_ = 0;  // the count before the last doubling, and its speed
  double previous_rate_ = 0;
};

// The workers a transfer runs, and which of them leave when the controller's target falls.
// Deciding that a worker leaves and counting it out are one step: were they two (every worker
// checks "more running than the target?", and only later counts itself out), a target that
// falls by several would let every worker leave at once, the last one too, and the file
// would end with terms nobody fetched. Not synchronised: its owner calls it under its lock.
class WorkerRoster {
 public:
  void reset() { running_ = 0; }
  void joined() { ++running_; }
  // True, and the worker counted out, when more run than `target`; at least one always stays.
  bool leave_if_surplus(std::size_t target) {
    if (running_ <= (target > 0 ? target : 1)) return false;
    --running_;
    return true;
  }
  void left() { --running_; }  // for any other reason (no work left, stopped, failed)
  std::size_t running() const { return running_; }

 private:
  std::size_t running_ = 0;
};

}  // namespace rbee::provisioner
