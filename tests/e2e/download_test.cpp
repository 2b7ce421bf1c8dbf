// End to end: model_download jobs through the real rbee-hive binary, with HF_ENDPOINT pointed at
// the local Hub fixture. Each test asserts on the bytes on disk, the catalog as YAML, the job's
// stream and the fixture's request log.

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <csignal>
#include <set>

#include "e2e/hive_with_hub.hpp"

using namespace rbee::testing;
using nlohmann::json;

namespace {

constexpr const char* kToken = "hf_e2eSecretToken0123456789abcdef";

// A repo with one LFS file, model.gguf, of `size` bytes.
FixtureRepo one_file_repo(const std::string& id, std::uint64_t size, std::uint64_t seed) {
  FixtureRepo repo;
  repo.id = id;
  repo.files = {{"model.gguf", size, true, seed}};
  return repo;
}

std::string start_download(const HiveProcess& hive, const std::string& model) {
  return hive.submit_job({{"operation", "model_download"}, {"model", model}});
}

// The model's files and metadata.yaml; the hive's working folder (.rbee/: parts, the listing
// the mirror answers from) is not the model's.
std::set<std::string> files_in(const std::filesystem::path& dir) {
  std::set<std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string path = entry.path().lexically_relative(dir).string();
    if (std::filesystem::is_regular_file(entry.path()) && !path.starts_with(".rbee/")) {
      files.insert(path);
    }
  }
  return files;
}

std::string joined(const std::set<std::string>& files) {
  std::string text;
  for (const auto& file : files) text += file + " ";
  return text;
}

std::vector<RecordedRequest> cdn_gets(const HubFixture& hub) {
  std::vector<RecordedRequest> gets;
  for (const auto& r : hub.requests()) {
    if (r.listener == "cdn" && r.method == "GET") gets.push_back(r);
  }
  return gets;
}

std::uint64_t range_start(const RecordedRequest& request) {
  if (!request.range.starts_with("bytes=")) return 0;
  return std::stoull(request.range.substr(6));
}

}  // namespace

TEST_CASE(
    "a multi-file repo downloads byte-exact, the catalog says ready, a second job is up to date") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));

  const SseStream stream = h.download({{"model", "acme/tiny"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  for (const auto& action :
       {"download_started", "file_started", "file_verified", "download_completed"}) {
    CHECK_MESSAGE(has_action(stream, action), action);
  }

  // The Hugging Face cache layout (DESIGN §16): blobs named by checksum, the commit's snapshot
  // of relative links to them, and the ref naming the commit.
  const auto dir = model_dir(h.hive.cache, "acme/tiny");
  const std::string commit = FixtureRepo{}.commit;
  const auto snapshot = dir / "snapshots" / commit;
  const std::set<std::string> expected{"config.json", "model.Q4_K_M.gguf",
                                       "tokenizer/tokenizer.json"};
  CHECK_MESSAGE(files_in(snapshot) == expected, joined(files_in(snapshot)));
  CHECK(read_text(dir / "refs" / "main") == commit);
  CHECK(std::filesystem::exists(dir / "metadata.yaml"));
  for (const auto& file : h.catalog_entry("acme/tiny")["files"]) {
    const std::string path = file["path"].as<std::string>();
    CHECK_MESSAGE(read_text(snapshot / path) == h.hub.content("acme/tiny", path), path);
    REQUIRE(std::filesystem::is_symlink(snapshot / path));
    const std::string link = std::filesystem::read_symlink(snapshot / path).string();
    const std::string up = path.find('/') == std::string::npos ? "../../" : "../../../";
    const std::string sha256 = file["sha256"].as<std::string>();
    const std::string blob = sha256.empty() ? file["etag"].as<std::string>() : sha256;
    CHECK_MESSAGE(link == up + "blobs/" + blob, link);
    CHECK(file["blob"].as<std::string>() == (dir / "blobs" / blob).string());
  }
  CHECK(h.catalog_entry("acme/tiny")["path"].as<std::string>() == snapshot.string());

  const YAML::Node entry = h.catalog_entry("acme/tiny");
  CHECK(entry["status"].as<std::string>() == "ready");
  CHECK(entry["commit"].as<std::string>() == FixtureRepo{}.commit);
  CHECK(entry["endpoint"].as<std::string>() == h.hub.endpoint());
  CHECK(entry["bytes_done"].as<std::uint64_t>() == entry["bytes_total"].as<std::uint64_t>());
  CHECK(entry["bytes_total"].as<std::uint64_t>() == 613 + 4099 + 2 * 1024 * 1024 + 3);
  REQUIRE(entry["files"].size() == 3);
  for (const auto& file : entry["files"]) {
    CHECK(file["state"].as<std::string>() == "verified");
    const std::string path = file["path"].as<std::string>();
    if (path == "model.Q4_K_M.gguf") {
      CHECK(file["sha256"].as<std::string>() == sha256_hex(h.hub.content("acme/tiny", path)));
    } else {
      CHECK(file["etag"].as<std::string>().size() == 40);
    }
  }
  CHECK(h.content_gets("cdn").size() == 1);  // the LFS file went through the CDN redirect

  h.hub.clear_requests();
  const SseStream again = h.download({{"model", "acme/tiny"}});
  CHECK(again.terminal() == "[DONE]");
  CHECK(has_action(again, "download_up_to_date"));
  CHECK(stream_text(again).find("already up to date") != std::string::npos);
  CHECK(h.content_gets("hub").empty());
  CHECK(h.content_gets("cdn").empty());
}

TEST_CASE("org/name:file and include/exclude globs select exactly the right files") {
  HiveWithHub h;
  for (const std::string id : {"acme/one", "acme/globs"}) {
    FixtureRepo repo;
    repo.id = id;
    repo.files = {{"model.Q4_K_M.gguf", 1000, true, 1},
                  {"model.Q8_0.gguf", 2000, true, 2},
                  {"config.json", 100, false, 3},
                  {"docs/README.md", 50, false, 4}};
    h.hub.add_repo(repo);
  }
  CHECK(h.download({{"model", "acme/one:docs/README.md"}}).terminal() == "[DONE]");
  const auto one = model_dir(h.hive.cache, "acme/one") / "snapshots" / FixtureRepo{}.commit;
  CHECK(files_in(one) == std::set<std::string>{"docs/README.md"});

  const SseStream globs = h.download(
      {{"model", "acme/globs"}, {"include", {"*.gguf", "*.json"}}, {"exclude", {"*Q8*"}}});
  CHECK(globs.terminal() == "[DONE]");
  const auto globbed = model_dir(h.hive.cache, "acme/globs") / "snapshots" / FixtureRepo{}.commit;
  CHECK(files_in(globbed) == std::set<std::string>{"config.json", "model.Q4_K_M.gguf"});

  const SseStream missing = h.download({{"model", "acme/one:nope.gguf"}});
  CHECK(missing.terminal().starts_with("[ERROR]"));
  CHECK(missing.terminal().find("nope.gguf") != std::string::npos);
}

TEST_CASE(
    "a gated repo fails helpfully without a token, and with HF_TOKEN downloads without leaking "
    "it") {
  FixtureRepo gated = tiny_repo("acme/gated");
  gated.access = RepoAccess::gated;
  FixtureRepo secret = tiny_repo("acme/secret");
  secret.access = RepoAccess::private_repo;
  {
    HiveWithHub h;
    h.hub.set_valid_token(kToken);
    h.hub.add_repo(gated);
    h.hub.add_repo(secret);
    const SseStream refused = h.download({{"model", "acme/gated"}});
    CHECK(refused.terminal().starts_with("[ERROR]"));
    CHECK(refused.terminal().find("gated") != std::string::npos);
    CHECK(refused.terminal().find("request access") != std::string::npos);
    const SseStream hidden = h.download({{"model", "acme/secret"}});
    CHECK(hidden.terminal().find("private") != std::string::npos);
    CHECK(hidden.terminal().find("HF_TOKEN") != std::string::npos);
    // The token belongs to the hive: a client's HF_TOKEN is never sent.
    CHECK(hidden.terminal().find("in the hive's environment") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(model_dir(h.hive.cache, "acme/gated")));
  }

  HiveWithHub h(fast_flags(), {{"HF_TOKEN", kToken}});
  h.hub.set_valid_token(kToken);
  h.hub.add_repo(gated);
  const SseStream stream = h.download({{"model", "acme/gated"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(read_text(model_file(h.hive.cache, "acme/gated", "model.Q4_K_M.gguf")) ==
        h.hub.content("acme/gated", "model.Q4_K_M.gguf"));

  bool hub_saw_token = false;
  for (const auto& request : h.hub.requests()) {
    if (request.listener == "hub")
      hub_saw_token |= request.authorization == std::string("Bearer ") + kToken;
    if (request.listener == "cdn") CHECK_MESSAGE(request.authorization.empty(), request.path);
  }
  CHECK(hub_saw_token);
  CHECK_FALSE(h.content_gets("cdn").empty());
  CHECK(stream_text(stream).find(kToken) == std::string::npos);
  CHECK(h.hive->log().find(kToken) == std::string::npos);
  CHECK(read_text(model_dir(h.hive.cache, "acme/gated") / "metadata.yaml").find(kToken) ==
        std::string::npos);
}

TEST_CASE("a repo listing names that escape the model folder fails and writes nothing outside it") {
  HiveWithHub h;
  for (const std::string name :
       {"../escaped.txt", "/tmp/absolute.txt", "a/../../b.txt", "back\\slash.txt"}) {
    FixtureRepo repo;
    repo.id = "acme/evil";
    repo.files = {{"config.json", 10, false, 1}, {name, 10, false, 2}};
    h.hub.add_repo(repo);
    const SseStream stream = h.download({{"model", "acme/evil"}});
    CHECK_MESSAGE(stream.terminal().starts_with("[ERROR] refusing acme/evil"), stream.terminal());
    const YAML::Node entry = h.catalog_entry("acme/evil");
    CHECK(entry["status"].as<std::string>() == "failed");
    CHECK(entry["error"].as<std::string>().find("cannot safely write") != std::string::npos);
  }
  CHECK(files_in(h.hive.dir.path()).count("escaped.txt") == 0);
  CHECK(files_in(h.hive.cache).count("b.txt") == 0);
  CHECK_FALSE(std::filesystem::exists("/tmp/absolute.txt"));
  CHECK(files_in(model_dir(h.hive.cache, "acme/evil")) == std::set<std::string>{"metadata.yaml"});
}

TEST_CASE("every fault mode of the network ends in a verified, ready model") {
  HiveWithHub h;
  FixtureRepo repo;
  repo.id = "acme/faulty";
  const std::uint64_t size = 3 * 1024 * 1024 + 5;
  repo.files = {{"a-5xx.bin", size, true, 21},     {"b-drop.bin", size, true, 22},
                {"c-corrupt.bin", size, true, 23}, {"d-stall.bin", size, true, 24},
                {"e-norange.bin", size, true, 25}, {"f-expired.bin", size, true, 26},
                {"g-429.json", 5000, false, 27}};
  h.hub.add_repo(repo);
  h.hub.set_faults("a-5xx.bin", Faults{.times = 2, .error_status = 503, .retry_after_s = 0});
  h.hub.set_faults("b-drop.bin", Faults{.times = 1, .drop_after_bytes = 1024 * 1024});
  h.hub.set_faults("c-corrupt.bin", Faults{.times = 1, .corrupt_at = 2 * 1024 * 1024});
  h.hub.set_faults("d-stall.bin", Faults{.times = 1, .stall_after_bytes = 1536 * 1024});
  h.hub.set_faults("e-norange.bin",
                   Faults{.times = 2, .drop_after_bytes = 1024 * 1024, .ignore_range = true});
  h.hub.set_faults("f-expired.bin", Faults{.times = 1, .expire_signed_url = true});
  h.hub.set_faults("g-429.json", Faults{.times = 1, .error_status = 429, .retry_after_s = 0});
  h.hub.set_faults("/api/models/acme/faulty", Faults{.times = 1, .error_status = 502});

  const SseStream stream = h.download({{"model", "acme/faulty"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  for (const auto& file : repo.files) {
    CHECK_MESSAGE(read_text(model_file(h.hive.cache, "acme/faulty", file.path)) ==
                      h.hub.content("acme/faulty", file.path),
                  file.path);
  }
  CHECK(h.catalog_entry("acme/faulty")["status"].as<std::string>() == "ready");
  const std::string text = stream_text(stream);
  for (const std::string reason :
       {"Listing acme/faulty again", "server error (503)", "connection lost", "sha256 mismatch",
        "stalled", "refreshing the URL", "rate limited"}) {
    CHECK_MESSAGE(text.find(reason) != std::string::npos, reason << " not in\n" << text);
  }
  // The dropped download resumed where it stopped instead of starting over.
  bool resumed = false;
  for (const auto& request : h.content_gets("cdn")) resumed |= range_start(request) == 1024 * 1024;
  CHECK(resumed);
}

TEST_CASE("a file corrupted on every try fails with both hashes and is never marked ready") {
  HiveWithHub h;
  h.hub.add_repo(one_file_repo("acme/rotten", 100000, 31));
  h.hub.set_faults("model.gguf", Faults{.times = 5, .corrupt_at = 777});

  const SseStream stream = h.download({{"model", "acme/rotten"}});
  const std::string expected = sha256_hex(h.hub.content("acme/rotten", "model.gguf"));
  CHECK(stream.terminal().starts_with("[ERROR]"));
  CHECK(stream.terminal().find(expected) != std::string::npos);
  const YAML::Node entry = h.catalog_entry("acme/rotten");
  CHECK(entry["status"].as<std::string>() == "failed");
  CHECK(entry["error"].as<std::string>().find(expected) != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(model_file(h.hive.cache, "acme/rotten", "model.gguf")));
}

TEST_CASE(
    "a hive killed mid-file (one connection) is marked interrupted and the next job resumes") {
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "acme/big";
  const std::uint64_t size = 48 * 1024 * 1024 + 1;
  repo.files = {{"config.json", 500, false, 41}, {"model.gguf", size, true, 42}};
  hub.add_repo(repo);
  hub.set_rate_limit(8 * 1024 * 1024);

  HiveUnderTest hive(fast_flags({"--connections", "1"}), "", {{"HF_ENDPOINT", hub.endpoint()}});
  const auto model = model_dir(hive.cache, "acme/big");
  start_download(*hive.hive, "acme/big");
  REQUIRE(wait_for_part(model, 2 * 1024 * 1024));
  CHECK_FALSE(hive->stop(SIGKILL).has_value());
  const std::uint64_t kept = part_bytes(model);
  CHECK(kept < size);

  hub.set_rate_limit(0);
  hub.clear_requests();
  hive.hive = std::make_unique<HiveProcess>(
      HiveOptions{hive.cache,
                  fast_flags({"--connections", "1"}),
                  {{"HF_ENDPOINT", hub.endpoint()}, {"HF_HOME", (hive.dir / "hf").string()}}});
  const json listed = get_json(*hive.hive, "/v1/models/acme/big");
  CHECK(listed["status"] == "interrupted");

  const SseStream stream = watch(*hive.hive, start_download(*hive.hive, "acme/big"));
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(read_text(model_file(hive.cache, "acme/big", "model.gguf")) ==
        hub.content("acme/big", "model.gguf"));
  std::uint64_t fetched = 0;
  for (const auto& request : hub.requests()) {
    if (request.listener != "cdn" || request.method != "GET") continue;
    CHECK(range_start(request) == kept);  // only the missing tail was asked for
    fetched += size - range_start(request);
  }
  CHECK(fetched == size - kept);
  const std::string text = stream_text(stream);
  CHECK(text.find("config.json is already verified") != std::string::npos);
}

TEST_CASE("a hive killed with ranges in flight resumes every range and verifies") {
  HubFixture hub;
  const std::uint64_t size = 64 * 1024 * 1024 + 5;
  hub.add_repo(one_file_repo("acme/ranged", size, 81));
  hub.set_rate_limit(1024 * 1024);  // per connection: each first request takes 2 s
  const auto flags = fast_flags({"--connections", "8", "--min-range-mb", "1"});
  HiveUnderTest hive(flags, "", {{"HF_ENDPOINT", hub.endpoint()}});
  const auto sidecar = [&] {
    return working_file(model_dir(hive.cache, "acme/ranged"), ".ranges");
  };
  start_download(*hive.hive, "acme/ranged");

  auto kept_ranges = [&] {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> kept;
    const auto json = json::parse(read_text(sidecar()), nullptr, false);
    if (json.is_discarded() || !json.contains("done")) return kept;
    for (const auto& range : json["done"]) kept.emplace_back(range[0], range[1]);
    return kept;
  };
  for (int i = 0; i < 2000 && kept_ranges().size() < 4; ++i) {  // until 4 ranges have progressed
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK_FALSE(hive->stop(SIGKILL).has_value());
  const auto kept = kept_ranges();  // what the restart will trust
  REQUIRE(kept.size() >= 4);

  hub.set_rate_limit(0);
  hub.clear_requests();
  hive.hive = std::make_unique<HiveProcess>(
      HiveOptions{hive.cache,
                  flags,
                  {{"HF_ENDPOINT", hub.endpoint()}, {"HF_HOME", (hive.dir / "hf").string()}}});
  CHECK(get_json(*hive.hive, "/v1/models/acme/ranged")["status"] == "interrupted");
  const SseStream stream = watch(*hive.hive, start_download(*hive.hive, "acme/ranged"));
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(read_text(model_file(hive.cache, "acme/ranged", "model.gguf")) ==
        hub.content("acme/ranged", "model.gguf"));
  CHECK_FALSE(std::filesystem::exists(sidecar()));
  std::set<std::uint64_t> resumed_at;
  for (const auto& get : cdn_gets(hub)) {
    const std::uint64_t start = range_start(get);
    for (const auto& [begin, end] : kept) {
      CHECK_MESSAGE(!(start >= begin && start < end), "re-fetched kept byte " << start);
      if (start == end) resumed_at.insert(start);
    }
  }
  CHECK(resumed_at.size() == kept.size());  // every range continued where it stopped
}

TEST_CASE("a cancelled download keeps its part and a new job resumes it") {
  HiveWithHub h;
  h.hub.add_repo(one_file_repo("acme/slow", 32 * 1024 * 1024, 51));
  h.hub.set_rate_limit(8 * 1024 * 1024);

  const auto model = model_dir(h.hive.cache, "acme/slow");
  const std::string job_id = h.hive->submit_job(  // one connection, for this job only
      {{"operation", "model_download"}, {"model", "acme/slow"}, {"connections", 1}});
  REQUIRE(wait_for_part(model, 1024 * 1024));
  const auto started = std::chrono::steady_clock::now();
  auto res = h.hive->client()->Delete("/v1/jobs/" + job_id);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(watch(*h.hive.hive, job_id).terminal() == "[CANCELLED]");
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
  CHECK(h.catalog_entry("acme/slow")["status"].as<std::string>() == "cancelled");
  const std::uint64_t kept = part_bytes(model);
  CHECK(kept > 0);

  h.hub.set_rate_limit(0);
  h.hub.clear_requests();
  CHECK(h.download({{"model", "acme/slow"}}).terminal() == "[DONE]");
  CHECK(read_text(model_file(h.hive.cache, "acme/slow", "model.gguf")) ==
        h.hub.content("acme/slow", "model.gguf"));
  // The resuming job uses ranges (8 connections): the single-connection part is their prefix.
  const auto gets = h.content_gets("cdn");
  CHECK(gets.size() >= 2);
  std::uint64_t first = UINT64_MAX;
  for (const auto& get : gets) first = std::min(first, range_start(get));
  CHECK(first == kept);
}

TEST_CASE("two hives sharing a cache download a model once, the second job follows the first") {
  HiveWithHub first;
  // 2 s of download: time for the second hive's job to find the first one's lock.
  first.hub.add_repo(one_file_repo("acme/shared", 16 * 1024 * 1024, 61));
  first.hub.set_rate_limit(8 * 1024 * 1024);
  HiveProcess second(HiveOptions{
      first.hive.cache,
      fast_flags(),
      {{"HF_ENDPOINT", first.hub.endpoint()}, {"HF_HOME", (first.hive.dir / "hf").string()}}});

  const std::string job_a = start_download(*first.hive.hive, "acme/shared");
  REQUIRE(wait_for_part(model_dir(first.hive.cache, "acme/shared"), 1));
  const std::string job_b = start_download(second, "acme/shared");
  const SseStream stream_b = watch(second, job_b);
  const SseStream stream_a = watch(*first.hive.hive, job_a);
  CHECK(stream_a.terminal() == "[DONE]");
  CHECK(stream_b.terminal() == "[DONE]");
  CHECK(has_action(stream_b, "download_waiting"));
  CHECK(has_action(stream_b, "download_progress"));
  CHECK(first.content_gets("cdn").size() == 1);
  CHECK(read_text(model_file(first.hive.cache, "acme/shared", "model.gguf")) ==
        first.hub.content("acme/shared", "model.gguf"));
}

TEST_CASE("downloads over the concurrency limit are queued and say so") {
  HiveWithHub h(fast_flags({"--max-concurrent-downloads", "1"}));
  // The first takes 2 s, so the second is submitted while it runs even on a loaded machine.
  h.hub.add_repo(one_file_repo("acme/q1", 16 * 1024 * 1024, 71));
  h.hub.add_repo(one_file_repo("acme/q2", 4 * 1024 * 1024, 71));
  h.hub.set_rate_limit(8 * 1024 * 1024);
  const std::string first = start_download(*h.hive.hive, "acme/q1");
  REQUIRE(wait_for_part(model_dir(h.hive.cache, "acme/q1"), 1));
  const SseStream second = h.download({{"model", "acme/q2"}});
  CHECK(second.terminal() == "[DONE]");
  CHECK(has_action(second, "download_queued"));
  CHECK(watch(*h.hive.hive, first).terminal() == "[DONE]");
}

TEST_CASE("not enough disk space fails early with the numbers and downloads nothing") {
  HiveWithHub h(fast_flags({"--disk-reserve-mb", "1000000000"}));
  h.hub.add_repo(tiny_repo("acme/huge"));
  const SseStream stream = h.download({{"model", "acme/huge"}});
  CHECK(stream.terminal().starts_with("[ERROR] not enough disk space for acme/huge"));
  CHECK(stream.terminal().find("available") != std::string::npos);
  CHECK(h.content_gets("hub").empty());
  CHECK(h.content_gets("cdn").empty());
  CHECK(h.catalog_entry("acme/huge")["status"].as<std::string>() == "failed");
}

TEST_CASE("a Hub that cannot be reached fails the job clearly and the hive serves on") {
  HiveUnderTest hive(fast_flags(), "",
                     {{"HF_ENDPOINT", "http://127.0.0.1:" + std::to_string(free_port())}});
  const SseStream stream = watch(*hive.hive, start_download(*hive.hive, "acme/gone"));
  CHECK(stream.terminal().starts_with("[ERROR] cannot reach http://127.0.0.1:"));
  CHECK(get_json(*hive.hive, "/health")["status"] == "ok");
  CHECK_FALSE(std::filesystem::exists(model_dir(hive.cache, "acme/gone")));
}

TEST_CASE("a repo of many small files downloads several at once, within the job's connections") {
  HiveWithHub h;
  FixtureRepo repo;
  repo.id = "acme/many";
  for (int i = 0; i < 24; ++i) {
    repo.files.push_back({fmt::format("shard-{:02}.json", i), 40 * 1024, false, 200u + i});
  }
  h.hub.add_repo(repo);
  h.hub.set_rate_limit(200 * 1024);  // 0.2 s a file: downloads overlap if they run at once

  CHECK(h.download({{"model", "acme/many"}, {"connections", 3}}).terminal() == "[DONE]");
  CHECK(h.hub.max_concurrent_content() >= 2);  // files in parallel…
  CHECK(h.hub.max_concurrent_content() <= 3);  // …and never past the job's budget
  for (const auto& file : repo.files) {
    CHECK(read_text(model_file(h.hive.cache, "acme/many", file.path)) ==
          h.hub.content("acme/many", file.path));
  }
}

TEST_CASE("regular files are fetched with one GET each, over reused keep-alive connections") {
  HiveWithHub h(fast_flags({"--parallel-files", "2"}));
  FixtureRepo repo;
  repo.id = "acme/shards";
  for (int i = 0; i < 20; ++i)
    repo.files.push_back({fmt::format("shard-{:02}.json", i), 1000u + i, false, 500u + i});
  h.hub.add_repo(repo);

  const SseStream stream = h.download({{"model", "acme/shards"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  std::set<int> connections;
  std::size_t file_requests = 0;
  for (const auto& r : h.hub.requests()) {
    if (r.listener != "hub" || r.path.find("/resolve/") == std::string::npos) continue;
    ++file_requests;
    connections.insert(r.client_port);
  }
  CHECK(file_requests == 20);  // one GET per regular file: no HEAD to resolve it first
  // Two files at a time: a connection or two each, not one per request.
  CHECK_MESSAGE(connections.size() <= 4, connections.size() << " connections");
  for (const auto& file : repo.files)
    CHECK(read_text(model_file(h.hive.cache, "acme/shards", file.path)) ==
          h.hub.content("acme/shards", file.path));
}

TEST_CASE("with parallel files, one failing file fails clearly and the others still finish") {
  HiveWithHub h;
  FixtureRepo repo;
  repo.id = "acme/partial";
  for (int i = 0; i < 6; ++i)
    repo.files.push_back({fmt::format("part-{}.bin", i), 300000, true, 300u + i});
  h.hub.add_repo(repo);
  h.hub.set_faults("part-3.bin", Faults{.times = 100, .error_status = 404});

  const SseStream stream = h.download({{"model", "acme/partial"}});
  CHECK(stream.terminal().starts_with("[ERROR] part-3.bin"));
  CHECK(has_action(stream, "file_failed"));
  const YAML::Node entry = h.catalog_entry("acme/partial");
  CHECK(entry["status"].as<std::string>() == "failed");
  CHECK(entry["error"].as<std::string>().find("part-3.bin") != std::string::npos);
  for (const auto& file : entry["files"]) {
    const std::string path = file["path"].as<std::string>();
    CHECK_MESSAGE(file["state"].as<std::string>() == (path == "part-3.bin" ? "failed" : "verified"),
                  path);
    if (path != "part-3.bin") {
      // Verified blobs stay for the next attempt; no snapshot names a revision that is not whole.
      CHECK(read_text(blob_of(entry, path)) == h.hub.content("acme/partial", path));
    }
  }

  // Two failures: the job's error sums them up.
  h.hub.set_faults("part-3.bin", Faults{.times = 100, .error_status = 404});
  h.hub.set_faults("part-5.bin", Faults{.times = 100, .error_status = 404});
  std::filesystem::remove(blob_of(entry, "part-5.bin"));
  const SseStream again = h.download({{"model", "acme/partial"}});
  CHECK(again.terminal().starts_with("[ERROR] 2 of 6 files failed"));
}

TEST_CASE("an attempt that fails before it changed a file leaves a ready model ready") {
  HiveWithHub env;
  env.hub.add_repo(tiny_repo("org/tiny"));
  REQUIRE(env.download({{"model", "org/tiny"}}).terminal() == "[DONE]");
  const auto status = [&] { return env.catalog_entry("org/tiny")["status"].as<std::string>(); };
  REQUIRE(status() == "ready");

  SUBCASE("a revision that does not exist") {
    const auto job = env.hive->submit_job(
        {{"operation", "model_download"}, {"model", "org/tiny"}, {"revision", "v9.9"}});
    const auto stream = watch(*env.hive.hive, job);
    CHECK(stream.terminal().starts_with("[ERROR]"));
    CHECK(get_json(*env.hive.hive, "/v1/jobs/" + job).at("error_code") == "revision_not_found");
  }
  SUBCASE("a file the repo lacks") {
    const auto stream = env.download({{"model", "org/tiny:nope.gguf"}});
    CHECK(stream.terminal().starts_with("[ERROR]"));
    CHECK(stream.terminal().find("nope.gguf") != std::string::npos);
  }
  SUBCASE("a new commit whose first file cannot be had, then cancelled before its first byte") {
    FixtureRepo next = tiny_repo("org/tiny");
    next.commit = "1111111111111111111111111111111111111111";
    for (auto& file : next.files) file.seed += 100;
    env.hub.add_repo(next);
    for (const auto& file : next.files)
      env.hub.set_faults(file.path, Faults{.times = 100, .stall_after_bytes = 0});
    const auto job = env.hive->submit_job({{"operation", "model_download"}, {"model", "org/tiny"}});
    // The attempt has listed the new commit and says so in the catalog; its files are stalled.
    for (int i = 0; i < 500 && status() != "downloading"; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(status() == "downloading");
    REQUIRE(env.hive->client()->Delete("/v1/jobs/" + job));
    CHECK(watch(*env.hive.hive, job).terminal() == "[CANCELLED]");
  }
  // The entry is as it was: ready, at its commit, every file verified and on disk.
  const auto entry = env.catalog_entry("org/tiny");
  CHECK(entry["status"].as<std::string>() == "ready");
  CHECK(entry["commit"].as<std::string>() == FixtureRepo{}.commit);
  CHECK(entry["files"].size() == 3);
  for (const auto& file : entry["files"]) CHECK(file["state"].as<std::string>() == "verified");
  const auto model = get_json(*env.hive.hive, "/v1/models/org/tiny");
  CHECK(model.at("status") == "ready");
}

TEST_CASE("a gated model under a public listing fails at its first refused file; fallbacks go on") {
  // The real Hub lists a gated repo to anyone; only its files answer 401 GatedRepo.
  HiveWithHub env;
  env.hub.add_repo(tiny_repo("org/tiny"));
  FixtureRepo gated = tiny_repo("org/gated");
  gated.access = RepoAccess::gated_files;
  env.hub.add_repo(gated);
  const auto job = env.hive->submit_job({{"operation", "model_download"},
                                         {"model", "org/no-such-model"},
                                         {"fallbacks", {"org/gated", "org/tiny"}}});
  const auto stream = watch(*env.hive.hive, job);
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  std::vector<std::string> reasons;
  for (const auto& event : stream.events()) {
    if (!event.is_terminal() && event.json().value("action", "") == "download_fallback")
      reasons.push_back(event.json().at("human"));
  }
  REQUIRE(reasons.size() == 2);
  CHECK(reasons[1].find("gated_repo") != std::string::npos);
  CHECK(reasons[1].find("files failed") == std::string::npos);  // one answer, not per file
  // One file of the gated repo was asked for, no other.
  int gated_file_requests = 0;
  for (const auto& request : env.hub.requests()) {
    gated_file_requests += request.path.starts_with("/org/gated/resolve/") ? 1 : 0;
  }
  CHECK(gated_file_requests == 1);
  CHECK(get_json(*env.hive.hive, "/v1/models/org/tiny").at("status") == "ready");

  SUBCASE("alone, the job fails with the Hub's code") {
    const auto alone =
        env.hive->submit_job({{"operation", "model_download"}, {"model", "org/gated"}});
    CHECK(watch(*env.hive.hive, alone).terminal().starts_with("[ERROR]"));
    CHECK(get_json(*env.hive.hive, "/v1/jobs/" + alone).at("error_code") == "gated_repo");
  }
}

TEST_CASE("canonical ids without an owner (gpt2) work everywhere an id does, apart from org/name") {
  HiveWithHub env;
  env.hub.add_repo(tiny_repo("gpt2"));
  FixtureRepo org_named_gpt2 = tiny_repo("gpt2/other");  // an organisation called gpt2
  for (auto& file : org_named_gpt2.files) file.seed += 50;
  env.hub.add_repo(org_named_gpt2);

  REQUIRE(env.download({{"model", "gpt2"}}).terminal() == "[DONE]");
  REQUIRE(env.download({{"model", "gpt2/other"}}).terminal() == "[DONE]");
  CHECK(read_text(model_file(env.hive.cache, "gpt2", "config.json")) ==
        env.hub.content("gpt2", "config.json"));
  CHECK(read_text(model_file(env.hive.cache, "gpt2/other", "config.json")) ==
        env.hub.content("gpt2/other", "config.json"));
  CHECK(env.catalog_entry("gpt2")["id"].as<std::string>() == "gpt2");
  CHECK(std::filesystem::exists(env.hive.cache / "models--gpt2" / "refs" / "main"));
  CHECK(std::filesystem::exists(env.hive.cache / "models--gpt2--other" / "refs" / "main"));
  CHECK(get_json(*env.hive.hive, "/v1/models/gpt2").at("status") == "ready");
  CHECK(get_json(*env.hive.hive, "/v1/models").at("models").size() == 2);

  // repo:file, fallbacks and the client take it too.
  CHECK(env.download({{"model", "gpt2:config.json"}}).terminal() == "[DONE]");
  CHECK(env.download({{"model", "org/missing"}, {"fallbacks", {"gpt2"}}}).terminal() == "[DONE]");
  const auto pulled = run_hive_command(
      {"pull", "gpt2", "--hive", fmt::format("http://127.0.0.1:{}", env.hive->port())});
  CHECK_MESSAGE(pulled.exit_code == 0, pulled.err);
  CHECK(pulled.out.find("gpt2 is already up to date") != std::string::npos);

  // The mirror's routes.
  const auto client = env.hive->client();
  const auto info = client->Get("/hf/api/models/gpt2");
  REQUIRE(info);
  CHECK(info->status == 200);
  CHECK(json::parse(info->body).at("id") == "gpt2");
  const auto file = client->Get("/hf/gpt2/resolve/main/config.json");
  REQUIRE(file);
  CHECK(file->status == 200);
  CHECK(file->body == env.hub.content("gpt2", "config.json"));
  const auto other = client->Get("/hf/gpt2/other/resolve/main/config.json");
  REQUIRE(other);
  CHECK(other->body == env.hub.content("gpt2/other", "config.json"));

  // Deleting one leaves the other.
  const auto deleted =
      watch(*env.hive.hive, env.hive->submit_job({{"operation", "model_delete"}, {"id", "gpt2"}}));
  CHECK(deleted.terminal() == "[DONE]");
  CHECK_FALSE(std::filesystem::exists(model_dir(env.hive.cache, "gpt2")));
  CHECK(std::filesystem::exists(model_file(env.hive.cache, "gpt2/other", "config.json")));
}
