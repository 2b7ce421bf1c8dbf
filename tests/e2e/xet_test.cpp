// End to end: Xet downloads (DESIGN §15) through the real rbee-hive binary against the fixture's
// own CAS and transfer server: every scheme and both reconstruction versions verify, a new
// revision fetches only its changed chunks, a shared file is fetched once, faults are retried,
// a SIGKILL resumes by term, and neither token goes where it must not.

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <csignal>
#include <thread>

#include "e2e/hive_with_hub.hpp"

using namespace rbee::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr const char* kToken = "hf_xetSecretToken0123456789abcdef";

FixtureFile xet_file(std::string path, std::uint64_t size, std::uint64_t seed,
                     XetLayout layout = {}) {
  FixtureFile file{std::move(path), size, true, seed};
  file.xet = true;
  file.xet_layout = layout;
  return file;
}

FixtureRepo xet_repo(const std::string& id, std::vector<FixtureFile> files,
                     std::string commit = FixtureRepo{}.commit) {
  FixtureRepo repo;
  repo.id = id;
  repo.commit = std::move(commit);
  repo.files = std::move(files);
  return repo;
}

std::vector<RecordedRequest> requests_to(const HubFixture& hub, const std::string& listener) {
  std::vector<RecordedRequest> found;
  for (const auto& r : hub.requests()) {
    if (r.listener == listener) found.push_back(r);
  }
  return found;
}

int token_requests(const HubFixture& hub) {
  int count = 0;
  for (const auto& r : hub.requests()) {
    count += r.listener == "hub" && r.path.find("/xet-read-token/") != std::string::npos;
  }
  return count;
}

std::uint64_t metric(const HiveProcess& hive, const std::string& name) {
  const auto res = hive.client()->Get("/metrics");
  REQUIRE(res);
  const auto at = res->body.find("\n" + name + " ");
  REQUIRE(at != std::string::npos);
  return std::stoull(res->body.substr(at + name.size() + 2));
}

// A new hive process on the same cache (the last one was killed), downloading `model`.
SseStream restart_and_download(HiveUnderTest& hive, const std::vector<std::string>& flags,
                               const HubFixture& hub, const std::string& model) {
  hive.hive = std::make_unique<HiveProcess>(
      HiveOptions{hive.cache,
                  flags,
                  {{"HF_ENDPOINT", hub.endpoint()}, {"HF_HOME", (hive.dir / "hf").string()}}});
  return watch(*hive.hive, hive->submit_job({{"operation", "model_download"}, {"model", model}}));
}

}  // namespace

TEST_CASE("Xet files download from the CAS, verify, and each token stays where it belongs") {
  HiveWithHub h(fast_flags(), {{"HF_TOKEN", kToken}});
  h.hub.set_valid_token(kToken);
  XetLayout fixed_lz4{XetChunking::fixed, XetCompression::lz4, 3};
  FixtureRepo repo = xet_repo("acme/xet", {xet_file("model.gguf", 3 * 1024 * 1024 + 7, 21),
                                           xet_file("shard.bin", 1024 * 1024 + 1, 22, fixed_lz4),
                                           {"config.json", 300, false, 23}});
  repo.access = RepoAccess::gated;
  h.hub.add_repo(repo);

  const SseStream stream = h.download({{"model", "acme/xet"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  for (const auto& file : repo.files) {
    CHECK_MESSAGE(read_text(model_file(h.hive.cache, "acme/xet", file.path)) ==
                      h.hub.content("acme/xet", file.path),
                  file.path);
  }
  CHECK(h.content_gets("cdn").empty());  // the bridge was never used
  const auto cas = requests_to(h.hub, "cas");
  const auto transfers = requests_to(h.hub, "transfer");
  CHECK(cas.size() == 2);  // one reconstruction per Xet file
  REQUIRE_FALSE(transfers.empty());
  bool multi_range = false;
  for (const auto& r : cas) {
    CHECK(r.path.starts_with("/v2/reconstructions/"));
    CHECK(r.authorization.starts_with("Bearer xet-read-"));  // the Xet token, never the Hub's
    CHECK(r.authorization.find(kToken) == std::string::npos);
  }
  for (const auto& r : transfers) {
    CHECK(r.authorization.empty());  // presigned: no token of any kind
    CHECK(r.status == 206);
    multi_range = multi_range || r.range.find(',') != std::string::npos;
  }
  CHECK(multi_range);  // several ranges in one request, answered multipart
  for (const auto& r : h.hub.requests()) {
    if (r.listener == "hub" && r.path.find("/xet-read-token/") != std::string::npos) {
      CHECK(r.authorization == std::string("Bearer ") + kToken);  // the Hub token to the Hub
    }
  }
  CHECK(h.hive->log().find(kToken) == std::string::npos);
}

TEST_CASE("a CAS without v2 is read through v1, and one without a way to it leaves the bridge") {
  HiveWithHub h;
  h.hub.add_repo(
      xet_repo("acme/v1", {xet_file("model.gguf", 2 * 1024 * 1024, 31,
                                    {XetChunking::fixed, XetCompression::byte_grouping4_lz4, 4})}));
  h.hub.xet().set_v2_enabled(false);
  const SseStream stream = h.download({{"model", "acme/v1"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(read_text(model_file(h.hive.cache, "acme/v1", "model.gguf")) ==
        h.hub.content("acme/v1", "model.gguf"));
  bool asked_v1 = false;
  for (const auto& r : requests_to(h.hub, "cas")) asked_v1 = asked_v1 || r.path.starts_with("/v1/");
  CHECK(asked_v1);
  CHECK(h.content_gets("cdn").empty());

  // A CAS that answers 503 to every reconstruction: the bridge, once the retries are spent.
  h.hub.add_repo(xet_repo("acme/busycas", {xet_file("model.gguf", 1024 * 1024, 33)}));
  h.hub.xet().set_reconstruction_faults({1000, 503});
  const SseStream busy = h.download({{"model", "acme/busycas"}});
  REQUIRE_MESSAGE(busy.terminal() == "[DONE]", stream_text(busy));
  CHECK(read_text(model_file(h.hive.cache, "acme/busycas", "model.gguf")) ==
        h.hub.content("acme/busycas", "model.gguf"));
  CHECK(stream_text(busy).find("through the Hub's bridge") != std::string::npos);
  h.hub.xet().set_reconstruction_faults({0, 0});

  h.hub.add_repo(xet_repo("acme/nocas", {xet_file("model.gguf", 1024 * 1024, 32)}));
  h.hub.xet().stop_cas();
  const SseStream bridged = h.download({{"model", "acme/nocas"}});
  REQUIRE_MESSAGE(bridged.terminal() == "[DONE]", stream_text(bridged));
  CHECK(read_text(model_file(h.hive.cache, "acme/nocas", "model.gguf")) ==
        h.hub.content("acme/nocas", "model.gguf"));
  CHECK(stream_text(bridged).find("through the Hub's bridge") != std::string::npos);
  CHECK(h.content_gets("cdn").size() == 2);
}

TEST_CASE("a file the bridge refuses downloads through Xet; with --xet=off it cannot") {
  HiveWithHub h;
  h.hub.add_repo(xet_repo("acme/huge", {xet_file("model.gguf", 2 * 1024 * 1024, 41)}));
  h.hub.set_bridge_limit(1024 * 1024);
  const SseStream stream = h.download({{"model", "acme/huge"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(read_text(model_file(h.hive.cache, "acme/huge", "model.gguf")) ==
        h.hub.content("acme/huge", "model.gguf"));

  HiveUnderTest off(fast_flags({"--xet", "off"}), "", {{"HF_ENDPOINT", h.hub.endpoint()}});
  const SseStream refused =
      watch(*off.hive, off->submit_job({{"operation", "model_download"}, {"model", "acme/huge"}}));
  CHECK(refused.terminal().starts_with("[ERROR]"));
}

TEST_CASE("a new revision fetches only its changed chunks and copies the rest from disk") {
  HiveWithHub h;
  const std::uint64_t size = 8 * 1024 * 1024;
  const XetLayout layout{XetChunking::content_defined, XetCompression::none, 4};
  h.hub.add_repo(xet_repo("acme/evolving", {xet_file("model.gguf", size, 51, layout)}));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  const std::uint64_t first = h.hub.xet().transfer_bytes_sent();
  const std::uint64_t counted = metric(*h.hive.hive, "rbee_download_bytes_total");
  CHECK(first >= size);

  // Revision 2 changes 4 KiB in the middle (a fixed chat template, one tensor).
  FixtureFile changed = xet_file("model.gguf", size, 51, layout);
  changed.patches = {{size / 2, 4096, 99}};
  h.hub.add_repo(xet_repo("acme/evolving", {changed}, "1111111111111111111111111111111111111111"));
  const SseStream update = h.download({{"model", "acme/evolving"}});
  REQUIRE_MESSAGE(update.terminal() == "[DONE]", stream_text(update));
  CHECK(read_text(model_file(h.hive.cache, "acme/evolving", "model.gguf")) ==
        h.hub.content("acme/evolving", "model.gguf"));
  const std::uint64_t second = h.hub.xet().transfer_bytes_sent() - first;
  // Content-defined chunks: the change touches one or two chunks of at most 128 KiB each.
  CHECK(second > 0);
  CHECK(second <= 3 * 128 * 1024);
  CHECK(stream_text(update).find("from disk") != std::string::npos);
  CHECK(stream_text(update).find("0 B from the network") == std::string::npos);
  // The network counter counts what came over the network, not what was copied.
  const std::uint64_t fetched = metric(*h.hive.hive, "rbee_download_bytes_total") - counted;
  CHECK(fetched > 0);
  CHECK(fetched <= 3 * 128 * 1024);
  CHECK(metric(*h.hive.hive, "rbee_download_reused_bytes_total") >= size - 3 * 128 * 1024);
}

TEST_CASE("a file two models share is fetched once") {
  HiveWithHub h;
  const XetLayout layout{XetChunking::fixed, XetCompression::rotating, 4};
  h.hub.add_repo(xet_repo("acme/base", {xet_file("model.gguf", 3 * 1024 * 1024, 61, layout)}));
  h.hub.add_repo(xet_repo("acme/fork", {xet_file("weights.gguf", 3 * 1024 * 1024, 61, layout),
                                        {"README.md", 100, false, 62}}));
  REQUIRE(h.download({{"model", "acme/base"}}).terminal() == "[DONE]");
  const std::uint64_t first = h.hub.xet().transfer_bytes_sent();
  const SseStream fork = h.download({{"model", "acme/fork"}});
  REQUIRE_MESSAGE(fork.terminal() == "[DONE]", stream_text(fork));
  CHECK(h.hub.xet().transfer_bytes_sent() == first);  // every chunk came from disk
  CHECK(read_text(model_file(h.hive.cache, "acme/fork", "weights.gguf")) ==
        h.hub.content("acme/fork", "weights.gguf"));
}

TEST_CASE("expired tokens and URLs are renewed; 429, 503 and a dropped transfer are retried") {
  HiveWithHub h;
  h.hub.add_repo(xet_repo("acme/flaky", {xet_file("model.gguf", 4 * 1024 * 1024, 71)}));
  XetStore& xet = h.hub.xet();
  xet.set_reconstruction_faults({1, 401});  // the token expired at the CAS
  xet.set_transfer_faults({1, 403});        // a presigned URL expired
  const SseStream stream = h.download({{"model", "acme/flaky"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(token_requests(h.hub) >= 2);
  CHECK(xet.reconstructions_served() >= 2);
  CHECK(read_text(model_file(h.hive.cache, "acme/flaky", "model.gguf")) ==
        h.hub.content("acme/flaky", "model.gguf"));

  h.hub.add_repo(xet_repo("acme/flakier", {xet_file("model.gguf", 4 * 1024 * 1024, 72)}));
  xet.set_transfer_faults({3, 0, -1, 20000});  // three answers cut after 20 000 bytes
  const SseStream dropped = h.download({{"model", "acme/flakier"}});
  REQUIRE_MESSAGE(dropped.terminal() == "[DONE]", stream_text(dropped));
  xet.set_transfer_faults({1, 429, 0});
  xet.set_reconstruction_faults({1, 503, 0});
  h.hub.add_repo(xet_repo("acme/busy", {xet_file("model.gguf", 1024 * 1024, 73)}));
  const SseStream busy = h.download({{"model", "acme/busy"}});
  REQUIRE_MESSAGE(busy.terminal() == "[DONE]", stream_text(busy));
  CHECK(read_text(model_file(h.hive.cache, "acme/busy", "model.gguf")) ==
        h.hub.content("acme/busy", "model.gguf"));
  CHECK(has_action(busy, "download_retry"));
}

TEST_CASE("a hive killed mid-file resumes by term; a cancel ends a Xet download at once") {
  HubFixture hub;
  const std::uint64_t size = 16 * 1024 * 1024;
  // 1 MiB xorbs: a term per xorb, so some terms commit before the kill.
  hub.add_repo(xet_repo(
      "acme/resume",
      {xet_file("model.gguf", size, 81, {XetChunking::fixed, XetCompression::none, 1, 16, 0})}));
  hub.xet().set_transfer_rate(1024 * 1024);  // per answer: a few MiB/s with several connections
  const auto flags = fast_flags({"--connections", "4"});
  HiveUnderTest hive(flags, "", {{"HF_ENDPOINT", hub.endpoint()}});
  const auto model = model_dir(hive.cache, "acme/resume");
  hive->submit_job({{"operation", "model_download"}, {"model", "acme/resume"}});
  const auto sidecar = [&] { return working_file(model, ".ranges"); };
  for (int i = 0; i < 300 && read_text(sidecar()).find("\"done\":[[") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(read_text(sidecar()).find("\"done\":[[") != std::string::npos);
  CHECK_FALSE(hive->stop(SIGKILL).has_value());
  const json kept = json::parse(read_text(sidecar()));
  std::uint64_t kept_bytes = 0;
  for (const auto& range : kept["done"])
    kept_bytes += range[1].get<std::uint64_t>() - range[0].get<std::uint64_t>();
  CHECK(kept_bytes > 0);
  CHECK(kept_bytes < size);

  hub.xet().set_transfer_rate(0);
  std::this_thread::sleep_for(300ms);  // the killed hive's answers end
  const std::uint64_t before = hub.xet().transfer_bytes_sent();
  const SseStream stream = restart_and_download(hive, flags, hub, "acme/resume");
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(read_text(model_file(hive.cache, "acme/resume", "model.gguf")) ==
        hub.content("acme/resume", "model.gguf"));
  // Only terms not committed before the kill were fetched again (chunk headers aside).
  CHECK(hub.xet().transfer_bytes_sent() - before <= size - kept_bytes + 64 * 1024);

  hub.add_repo(xet_repo("acme/cancel", {xet_file("model.gguf", size, 82)}));
  hub.xet().set_transfer_rate(256 * 1024);
  const std::string job =
      hive->submit_job({{"operation", "model_download"}, {"model", "acme/cancel"}});
  REQUIRE(wait_for_part(model_dir(hive.cache, "acme/cancel"), 1));
  std::this_thread::sleep_for(300ms);
  const auto asked = std::chrono::steady_clock::now();
  REQUIRE(hive->client()->Delete("/v1/jobs/" + job));
  const SseStream cancelled = watch(*hive.hive, job);
  CHECK_MESSAGE(cancelled.terminal().find("CANCELLED") != std::string::npos,
                stream_text(cancelled));
  CHECK(std::chrono::steady_clock::now() - asked < 1500ms);
}

TEST_CASE("a Xet download killed in its first moment leaves a part that resumes, not a false one") {
  // The part is extended to the file's size at once; without a sidecar written first, a kill
  // before the first persist left a sparse full-size part that a resume took for a complete one
  // (a full hash, a false mismatch, the part discarded).
  HubFixture hub;
  const std::uint64_t size = 8 * 1024 * 1024;
  hub.add_repo(xet_repo("acme/early", {xet_file("model.gguf", size, 91)}));
  hub.xet().set_transfer_rate(256 * 1024);
  const auto flags = fast_flags({"--connections", "2"});
  HiveUnderTest hive(flags, "", {{"HF_ENDPOINT", hub.endpoint()}});
  const auto model = model_dir(hive.cache, "acme/early");
  hive->submit_job({{"operation", "model_download"}, {"model", "acme/early"}});
  REQUIRE(wait_for_part(model, size));  // extended: the transfers have barely begun
  CHECK_FALSE(hive->stop(SIGKILL).has_value());
  const auto sidecar = working_file(model, ".ranges");
  REQUIRE_MESSAGE(std::filesystem::exists(sidecar), "a full-size part with no sidecar");
  CHECK(json::parse(read_text(sidecar)).at("done").is_array());

  hub.xet().set_transfer_rate(0);
  const SseStream stream = restart_and_download(hive, flags, hub, "acme/early");
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK_MESSAGE(stream_text(stream).find("mismatch") == std::string::npos, stream_text(stream));
  CHECK(read_text(model_file(hive.cache, "acme/early", "model.gguf")) ==
        hub.content("acme/early", "model.gguf"));
}
