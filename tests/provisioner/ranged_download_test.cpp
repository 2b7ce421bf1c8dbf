// Large files over several connections in byte ranges, through FileDownloader against the
// local Hub fixture. Ranges are made small (64 KiB) so files of a few MiB have many of them.

#include <doctest/doctest.h>
#include <rbee/provisioner/file_downloader.hpp>

#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "hub_fixture/hub_fixture.hpp"
#include "staging.hpp"
#include "support/temp_dir.hpp"

using namespace rbee::provisioner;
using namespace rbee::testing;
using namespace std::chrono_literals;
using rbee::catalog::parse_model_id;

namespace {

constexpr std::uint64_t kRange = 64 * 1024;  // min_range_bytes in these tests

struct RangedSetup {
  HubFixture hub;
  TempDir dir;
  HubClient client;
  DownloadPolicy policy;
  std::vector<std::string> retries;
  std::vector<int> settled;  // each connections_settled count
  std::string settled_reason;
  std::optional<FileTimeline> timeline;                     // of the last verified file
  std::function<void(const std::string& reason)> on_retry;  // called with retries_mutex held
  std::mutex retries_mutex;

  explicit RangedSetup(std::vector<FixtureFile> files) : client(settings(hub)) {
    FixtureRepo repo;
    repo.id = "org/m";
    repo.files = std::move(files);
    hub.add_repo(repo);
    policy.connections = 4;
    policy.min_range_bytes = kRange;
    policy.backoff_base = 1ms;
    policy.backoff_max = 5ms;
    policy.stall_timeout = 300ms;
  }
  static HubSettings settings(const HubFixture& hub) {
    HubSettings s;
    s.endpoint = hub.endpoint();
    return s;
  }
  FileToFetch file(const std::string& path) {
    const std::string content = hub.content("org/m", path);
    return {path, content.size(), sha256_hex(content), ""};
  }
  void fetch(const std::string& path, std::stop_token stop = {}) {
    DownloadEvents events;
    events.retrying = [this](int, const std::string& reason, std::chrono::milliseconds) {
      std::lock_guard lock(retries_mutex);
      retries.push_back(reason);
      if (on_retry) on_retry(reason);
    };
    events.connections_settled = [this](int connections, const std::string& reason) {
      std::lock_guard lock(retries_mutex);
      settled.push_back(connections);
      settled_reason = reason;
    };
    events.finished = [this](const FileTimeline& finished) { timeline = finished; };
    FileDownloader(client, policy)
        .fetch(parse_model_id("org/m"), "main", file(path),
               rbee::catalog::Directory::open(dir.path(), true), stop, events);
  }
  bool exact(const std::string& path) {
    return read_text(dir / stored_path(file(path))) == hub.content("org/m", path);
  }
  std::vector<RecordedRequest> cdn_gets() {
    std::vector<RecordedRequest> gets;
    for (auto& r : hub.requests()) {
      if (r.listener == "cdn" && r.method == "GET") gets.push_back(r);
    }
    return gets;
  }
  std::string retry_text() {
    std::lock_guard lock(retries_mutex);
    std::string text;
    for (const auto& r : retries) text += r + "\n";
    return text;
  }
  bool no_leftovers(const std::string& path) {
    return !std::filesystem::exists(dir / ".rbee" / part_file_name(file(path))) &&
           !std::filesystem::exists(sidecar(path));
  }
  std::filesystem::path sidecar(const std::string& path) {
    return dir / ".rbee" / sidecar_file_name(file(path));
  }
};

// "bytes=a-b" → a
std::uint64_t range_start(const std::string& range) {
  return std::stoull(range.substr(6));
}

}  // namespace

TEST_CASE("ranged downloads reassemble byte-exactly around the range size") {
  const std::vector<std::uint64_t> sizes = {
      0, 1, 2 * kRange - 1, 2 * kRange, 2 * kRange + 1, 4 * kRange + 1, 3 * 1024 * 1024 + 7};
  std::vector<FixtureFile> files;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    files.push_back({"f" + std::to_string(i) + ".bin", sizes[i], true, 100 + i});
  }
  RangedSetup s(files);
  for (const auto& f : files) {
    s.hub.clear_requests();
    s.fetch(f.path);
    CHECK_MESSAGE(s.exact(f.path), f.path << " (" << f.size << " bytes)");
    CHECK(s.no_leftovers(f.path));
    const auto gets = s.cdn_gets();
    if (f.size >= 2 * kRange) {
      CHECK_MESSAGE(gets.size() >= 2, f.path);
      for (const auto& get : gets) CHECK(get.range.starts_with("bytes="));
    } else {
      CHECK(gets.size() <= 1);  // small files: one connection
    }
  }
  CHECK(s.retry_text().empty());
}

TEST_CASE("a range whose connection drops, stalls or gets a 5xx completes through a retry") {
  const std::uint64_t size = 2 * 1024 * 1024 + 3;
  RangedSetup s(
      {{"drop.bin", size, true, 1}, {"stall.bin", size, true, 2}, {"5xx.bin", size, true, 3}});
  s.hub.set_faults("drop.bin", Faults{.times = 1, .drop_after_bytes = 100 * 1024});
  s.hub.set_faults("stall.bin", Faults{.times = 1, .stall_after_bytes = 100 * 1024});
  s.hub.set_faults("5xx.bin", Faults{.times = 2, .error_status = 503, .retry_after_s = 0});
  for (const std::string path : {"drop.bin", "stall.bin", "5xx.bin"}) {
    s.fetch(path);
    CHECK_MESSAGE(s.exact(path), path);
    CHECK(s.no_leftovers(path));
  }
  const std::string text = s.retry_text();
  CHECK(text.find("drop.bin") != std::string::npos);
  CHECK(text.find("stall.bin") != std::string::npos);
  CHECK(text.find("server error (503)") != std::string::npos);
}

TEST_CASE("a server without range support gets one connection from zero") {
  RangedSetup s({{"big.bin", 1024 * 1024 + 1, true, 5}});
  s.hub.set_faults("big.bin", Faults{.times = 100, .ignore_range = true});
  s.fetch("big.bin");
  CHECK(s.exact("big.bin"));
  CHECK(s.no_leftovers("big.bin"));
  CHECK(s.retry_text().find("ignores Range") != std::string::npos);
}

TEST_CASE("a corrupted range fails the hash, and the file is fetched again from zero once") {
  RangedSetup s({{"big.bin", 1024 * 1024, true, 6}});
  s.hub.set_faults("big.bin", Faults{.times = 100, .corrupt_at = 700000});
  s.on_retry = [&s](const std::string& reason) {  // the first attempt is corrupted, not the second
    if (reason.find("mismatch") != std::string::npos)
      s.hub.set_faults("big.bin", Faults{.times = 0});
  };
  s.fetch("big.bin");
  CHECK(s.exact("big.bin"));
  CHECK(s.retry_text().find("sha256 mismatch") != std::string::npos);

  s.on_retry = nullptr;
  s.hub.set_faults("big.bin", Faults{.times = 100, .corrupt_at = 5});
  std::filesystem::remove(s.dir / stored_path(s.file("big.bin")));
  CHECK_THROWS_AS(s.fetch("big.bin"), DownloadError);
  CHECK_FALSE(std::filesystem::exists(s.dir / stored_path(s.file("big.bin"))));
}

TEST_CASE("an expired signed URL is re-resolved once for all ranges") {
  RangedSetup s({{"big.bin", 1024 * 1024, true, 7}});
  s.hub.set_faults("big.bin", Faults{.times = 1, .expire_signed_url = true});
  s.fetch("big.bin");
  CHECK(s.exact("big.bin"));
  CHECK(s.retry_text().find("refreshing the URL") != std::string::npos);
}

TEST_CASE("a cancelled ranged download persists its ranges and the next fetch resumes each") {
  const std::uint64_t size = 16 * 1024 * 1024;
  RangedSetup s({{"big.bin", size, true, 8}});
  s.hub.set_rate_limit(1024 * 1024);  // per connection: 4 ranges of 4 MiB take 4 s
  std::stop_source stop;
  std::thread canceller([&] {
    // Wait until the sidecar says a few ranges have progressed, then cancel.
    for (int i = 0; i < 500 && !stop.stop_requested(); ++i) {
      std::this_thread::sleep_for(10ms);
      std::ifstream in(s.sidecar("big.bin"));
      const auto json = nlohmann::json::parse(in, nullptr, false);
      if (!json.is_discarded() && json["done"].size() >= 2) stop.request_stop();
    }
  });
  CHECK_THROWS_AS(s.fetch("big.bin", stop.get_token()), DownloadCancelled);
  canceller.join();
  REQUIRE(std::filesystem::exists(s.sidecar("big.bin")));
  std::ifstream in(s.sidecar("big.bin"));
  const auto sidecar = nlohmann::json::parse(in);
  CHECK(sidecar["size"] == size);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> kept;
  for (const auto& range : sidecar["done"]) kept.emplace_back(range[0], range[1]);
  REQUIRE(kept.size() >= 2);

  s.hub.set_rate_limit(0);
  s.hub.clear_requests();
  s.fetch("big.bin");
  CHECK(s.exact("big.bin"));
  CHECK(s.no_leftovers("big.bin"));
  bool resumed_mid_range = false;
  for (const auto& get : s.cdn_gets()) {
    const std::uint64_t start = range_start(get.range);
    for (const auto& [begin, end] : kept) {
      CHECK_MESSAGE(!(start >= begin && start < end), "refetched kept byte " << start);
      resumed_mid_range |= start == end && end != size;
    }
  }
  CHECK(resumed_mid_range);
}

TEST_CASE("against a per-connection cap the download settles above 8 connections") {
  RangedSetup s({{"capped.bin", 24ULL << 20, true, 21}});
  s.policy.connections = 16;
  s.policy.min_range_bytes = 512 * 1024;
  s.policy.stall_timeout = 2s;
  s.hub.set_rate_limit(1 << 20);  // 1 MiB/s per connection, as a CDN caps each one
  s.fetch("capped.bin");
  CHECK(s.exact("capped.bin"));
  REQUIRE(s.settled.size() == 1);
  CHECK(s.settled[0] > 8);
  CHECK(s.hub.max_concurrent_content() > 8);
  CHECK(s.hub.max_concurrent_content() <= 16);
}

TEST_CASE("a server that answers 429 beyond 5 connections gets 5") {
  RangedSetup s({{"limited.bin", 12ULL << 20, true, 22}});
  s.policy.connections = 16;
  s.policy.min_range_bytes = 256 * 1024;
  s.policy.stall_timeout = 2s;
  s.hub.set_rate_limit(1 << 20);
  s.hub.set_max_concurrent_content(5);
  s.fetch("limited.bin");
  CHECK(s.exact("limited.bin"));
  REQUIRE(s.settled.size() == 1);
  // The connections the server was serving when it refused: 5, give or take the one that was
  // between two of its requests at that moment (the fixture counts bodies, not connections).
  CHECK_MESSAGE(s.settled[0] >= 4, s.settled_reason);
  CHECK_MESSAGE(s.settled[0] <= 6, s.settled_reason);
  CHECK(s.settled_reason.find("429") != std::string::npos);
  CHECK(s.retry_text().find("rate limited") != std::string::npos);
  CHECK(s.hub.max_concurrent_content() == 5);
}

TEST_CASE("a connection far slower than the others is replaced, and the file verifies") {
  RangedSetup s({{"uneven.bin", 16ULL << 20, true, 23}});
  s.policy.connections = 8;
  s.policy.min_range_bytes = 256 * 1024;
  s.policy.stall_timeout = 5s;
  s.hub.set_rate_limit(2 << 20);  // 2 MiB/s per connection…
  s.hub.set_faults("uneven.bin", Faults{.times = 1, .bytes_per_second = 32 * 1024});  // …but one
  s.fetch("uneven.bin");
  CHECK(s.exact("uneven.bin"));
  CHECK(s.no_leftovers("uneven.bin"));
  CHECK(s.retry_text().find("replacing it") != std::string::npos);
}

TEST_CASE(
    "ranges are claimed in file order: each byte asked for and sent once, hashed and "
    "written back while the others arrive") {
  const std::uint64_t size = 12ULL << 20;
  RangedSetup s({{"shared.bin", size, true, 24}});
  s.policy.connections = 4;
  s.policy.adaptive_connections = false;
  s.policy.min_range_bytes = 256 * 1024;
  s.policy.stall_timeout = 5s;
  s.hub.set_rate_limit(4 << 20);  // 4 MiB/s per connection…
  // …but the first is slower: the others go past it and claim what follows.
  s.hub.set_faults("shared.bin", Faults{.times = 1, .bytes_per_second = 1280 * 1024});
  s.fetch("shared.bin");
  CHECK(s.exact("shared.bin"));
  const auto gets = s.cdn_gets();
  std::set<std::uint64_t> starts;
  for (const auto& get : gets) starts.insert(range_start(get.range));
  CHECK(starts.size() == gets.size());        // no byte asked for twice…
  CHECK(s.hub.content_bytes_sent() == size);  // …nor sent twice: nobody dropped what was in flight
  CHECK(gets.size() > 4);                     // bounded requests, more than one per connection
  REQUIRE(s.timeline.has_value());
  CHECK(s.timeline->written_back >= 8ULL << 20);  // the writeback began before the last byte
  CHECK(s.timeline->received <= s.timeline->hashed);
  CHECK(s.timeline->hashed <= s.timeline->durable);
}
