// End to end: the daemon's life: start-up checks, persistence, bursts, graceful shutdown.

#include <signal.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <latch>

#include <rbee/catalog/model_catalog.hpp>

#include "e2e/helpers.hpp"

using namespace rbee::testing;
using nlohmann::json;

TEST_CASE("SIGTERM cancels running jobs, ends their streams with [CANCELLED] and exits 0") {
  HiveUnderTest hive;
  ModelLockHolder held(hive.cache, "org", "held");
  const std::string job_id = start_blocked_job(*hive.hive, "org/held");
  SseStream stream;
  std::latch watching(1);
  std::thread watcher([&] {
    bool first = true;
    stream = watch(*hive.hive, job_id, {}, [&](const SseMessage&) {
      if (first) watching.count_down();
      first = false;
      return true;
    });
  });
  watching.wait();
  CHECK(hive->stop(SIGTERM) == 0);
  watcher.join();
  CHECK(stream.terminal() == "[CANCELLED]");
  CHECK(hive->log().find("Stopped") != std::string::npos);
}

TEST_CASE("SIGINT stops an idle hive with exit code 0") {
  HiveUnderTest hive;
  CHECK(hive->stop(SIGINT) == 0);
}

TEST_CASE("the catalog outlives the process: a restarted hive lists the same models") {
  TempDir dir;
  const auto cache = dir / "models";
  {
    rbee::catalog::ModelCatalog catalog(cache);
    rbee::catalog::ModelEntry entry;
    entry.id = rbee::catalog::parse_model_id("org/kept");
    entry.status = rbee::catalog::ModelStatus::ready;
    catalog.put(entry);
  }
  for (int run = 0; run < 2; ++run) {
    HiveProcess hive({cache, {}, {}, ""});
    CHECK(get_json(hive, "/v1/models")["models"][0]["id"] == "org/kept");
    CHECK(hive.stop(SIGTERM) == 0);
  }
}

TEST_CASE("a burst of connections is accepted without the kernel dropping any") {
  HiveUnderTest hive;
  // cpp-httplib listens with a backlog of 5; dropped SYNs are retried only after ~1 s, so a
  // connect timeout below that fails exactly when the hive did not raise the backlog.
  constexpr int kClients = 200;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  std::latch start(1);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      httplib::Client client("127.0.0.1", hive->port());
      client.set_connection_timeout(std::chrono::milliseconds(800));
      start.wait();
      if (auto res = client.Get("/health"); res && res->status == 200) ++ok;
    });
  }
  start.count_down();
  for (auto& client : clients) client.join();
  CHECK(ok.load() == kClients);
}

TEST_CASE("start-up refuses unsafe or impossible settings with a clear message") {
  TempDir dir;
  SUBCASE("exposed without a token") {
    CHECK_THROWS_WITH(HiveProcess({dir / "m", {"--bind", "0.0.0.0"}, {}, ""}),
                      doctest::Contains("without an API token"));
  }
  SUBCASE("port already in use") {
    HiveUnderTest first;
    // /health answers from the first hive, so the launcher returns; the second must exit 1.
    HiveProcess second({dir / "m", {}, {}, "", first->port()});
    CHECK(second.wait_for_exit(std::chrono::seconds(20)) == 1);
    CHECK(second.log().find("cannot listen on 127.0.0.1:" + std::to_string(first->port())) !=
          std::string::npos);
  }
}

TEST_CASE("a bad flag or variable is one line naming what it allows, exit 2, never an abort") {
  TempDir dir;
  const std::string cache = (dir / "m").string();
  for (const auto& [args, env] :
       std::vector<std::pair<std::vector<std::string>, std::map<std::string, std::string>>>{
           {{"--cache-dir", cache, "--log-level", "verbose"}, {}},
           {{"--cache-dir", cache}, {{"RBEE_LOG_LEVEL", "verbose"}}}}) {
    const auto result = run_hive_command(args, env, std::chrono::seconds(20));
    CHECK(result.exit_code == 2);  // was 134: terminate after std::invalid_argument
    CHECK(result.err.find("verbose") != std::string::npos);
    CHECK(result.err.find("debug") != std::string::npos);  // names the allowed values
    CHECK(std::count(result.err.begin(), result.err.end(), '\n') == 1);
  }
  const auto xet = run_hive_command({"--cache-dir", cache}, {{"RBEE_XET", "sometimes"}});
  CHECK(xet.exit_code == 2);
  CHECK(xet.err.find("auto") != std::string::npos);
}

TEST_CASE("a cache folder that cannot be created or written is refused at start, exit 2") {
  TempDir dir;
  std::filesystem::create_directories(dir / "readonly");
  std::filesystem::permissions(
      dir / "readonly", std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  std::vector<std::string> folders = {"/proc/nope"};
  if (::geteuid() != 0) folders.push_back((dir / "readonly").string());  // root writes anyway
  for (const auto& folder : folders) {
    CAPTURE(folder);
    const auto result = run_hive_command({"--cache-dir", folder}, {}, std::chrono::seconds(20));
    CHECK(result.exit_code == 2);
    CHECK(result.err.find("cache folder " + folder) != std::string::npos);
  }
  std::filesystem::permissions(dir / "readonly", std::filesystem::perms::owner_all);
}
