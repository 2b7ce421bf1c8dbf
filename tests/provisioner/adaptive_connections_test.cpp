// The adaptive connection controller, driven with synthetic speed samples: what it decides
// for a server that caps each connection, one that does not, and one that refuses more.

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

#include "adaptive_connections.hpp"

using namespace rbee::provisioner;
using namespace std::chrono_literals;
using Clock = AdaptiveConnections::Clock;

namespace {

// Feeds the controller as a ranged download's coordinator would, every 50 ms, with a server
// whose aggregate speed for n connections is rate(n), until it settles.
template <typename Rate>
int settle(AdaptiveConnections& controller, Rate rate) {
  auto now = Clock::now();
  double bytes = 0;
  for (int tick = 0; tick < 1000 && !controller.settled(); ++tick) {
    now += 50ms;
    bytes += rate(controller.target()) * 0.05;
    controller.sample(now, static_cast<std::uint64_t>(bytes), controller.target());
  }
  REQUIRE(controller.settled());
  return controller.target();
}

// A slow CDN edge capped per connection like nginx's limit_rate: a connection may send
// `per_connection` × (whole seconds since its request + 1), so it sends its first second's
// worth at once and then a burst at each tick of the server's one-second clock. A window of a
// quarter second sees bursts or nothing, not the rate.
int settle_slow_edge(AdaptiveConnections& controller, double per_connection) {
  auto now = Clock::now();
  double elapsed = 0;
  std::vector<double> opened;  // when each connection's request arrived
  double arrived = 0;
  for (int tick = 0; tick < 20000 && !controller.settled(); ++tick) {
    now += 50ms;
    elapsed += 0.05;
    while (opened.size() < static_cast<std::size_t>(controller.target())) {
      opened.push_back(elapsed);
    }
    arrived = 0;
    for (const double start : opened) {
      arrived += per_connection * (std::floor(elapsed) - std::floor(start) + 1);
    }
    controller.sample(now, static_cast<std::uint64_t>(arrived), controller.target());
  }
  REQUIRE(controller.settled());
  return controller.target();
}

}  // namespace

TEST_CASE("a per-connection cap: the count doubles up to the ceiling") {
  AdaptiveConnections controller(32, 4);
  CHECK(settle(controller, [](int n) { return n * 50e6; }) == 32);
  CHECK(controller.reason().find("ceiling") != std::string::npos);
}

TEST_CASE(
    "a slow edge (300 KB/s per connection, in bursts) is judged past the bursts: the ceiling") {
  for (const double rate : {300e3, 1e6, 5e6}) {
    AdaptiveConnections controller(32, 4);
    CHECK_MESSAGE(settle_slow_edge(controller, rate) == 32,
                  rate << " B/s: " << controller.reason());
  }
}

TEST_CASE("a first step of slow connections (a likely cap) quadruples; a fast one doubles") {
  const auto first_step = [](double per_connection) {
    AdaptiveConnections controller(64, 4);
    auto now = Clock::now();
    double bytes = 0;
    for (int tick = 0; tick < 1000 && controller.target() == 4; ++tick) {
      now += 50ms;
      bytes += 4 * per_connection * 0.05;
      controller.sample(now, static_cast<std::uint64_t>(bytes), controller.target());
    }
    return controller.target();
  };
  CHECK(first_step(300e3) == 16);
  CHECK(first_step(100e6) == 8);
}

TEST_CASE("a link that one connection fills: it goes back to the count before the useless step") {
  AdaptiveConnections controller(32, 4);
  CHECK(settle(controller, [](int) { return 1e9; }) == 4);
  CHECK(controller.reason().find("stopped helping") != std::string::npos);
}

TEST_CASE("speed that grows up to 12 connections settles at enough of them, below the ceiling") {
  AdaptiveConnections controller(64, 4);
  const int count = settle(controller, [](int n) { return std::min(n, 12) * 50e6; });
  CHECK(count >= 12);
  CHECK(count < 64);
  CHECK(controller.reason().find("stopped helping") != std::string::npos);
}

TEST_CASE("a step that scales linearly is followed by a quadrupling") {
  AdaptiveConnections controller(64, 4);
  auto now = Clock::now();
  double bytes = 0;
  while (controller.target() == 4) {
    now += 50ms;
    bytes += 4 * 50e6 * 0.05;
    controller.sample(now, static_cast<std::uint64_t>(bytes), controller.target());
  }
  CHECK(controller.target() == 8);  // the first step doubles: nothing to compare yet
  while (controller.target() == 8) {
    now += 50ms;
    bytes += 8 * 50e6 * 0.05;
    controller.sample(now, static_cast<std::uint64_t>(bytes), controller.target());
  }
  CHECK(controller.target() == 32);
}

TEST_CASE("a refusal caps the count at the connections that were served, for good") {
  AdaptiveConnections controller(32, 4);
  controller.sample(Clock::now(), 0, 4);
  controller.refused(3);
  CHECK(controller.settled());
  CHECK(controller.target() == 3);
  controller.refused(5);  // a later, larger figure does not raise it
  CHECK(controller.target() == 3);
}

TEST_CASE("a ceiling of one is settled from the start") {
  AdaptiveConnections controller(1, 4);
  CHECK(controller.settled());
  CHECK(controller.target() == 1);
}

TEST_CASE("WorkerRoster: when the target falls, exactly the surplus leaves, never the last") {
  // Eight Xet workers check at once after the target fell from 8 to 2. Checking "more running
  // than the target?" and counting out later let all eight leave; here six do.
  WorkerRoster roster;
  std::mutex mutex;
  for (int i = 0; i < 8; ++i) roster.joined();
  std::atomic<int> left{0};
  {
    std::vector<std::jthread> workers;
    for (int i = 0; i < 8; ++i) {
      workers.emplace_back([&] {
        std::lock_guard lock(mutex);
        if (roster.leave_if_surplus(2)) ++left;
      });
    }
  }
  CHECK(left == 6);
  CHECK(roster.running() == 2);
  CHECK(roster.leave_if_surplus(0));        // a target of 0: one of the two leaves...
  CHECK_FALSE(roster.leave_if_surplus(0));  // ...and the last one stays
  CHECK(roster.running() == 1);
  roster.left();  // it runs out of work
  CHECK(roster.running() == 0);
}
