// End to end: a Hub that lies (DESIGN §12, "The Hub is not trusted either"): every hostile
// listing ends in a clean [ERROR] with a reason, nothing is written, memory stays bounded, and
// the daemon serves on.

#include <zlib.h>

#include <yaml-cpp/yaml.h>

#include "e2e/helpers.hpp"
#include "e2e/hive_with_hub.hpp"
#include "hub_fixture/header_drip_server.hpp"
#include "hub_fixture/hub_fixture.hpp"
#include "support/raw_connection.hpp"

using namespace rbee::testing;
using nlohmann::json;

namespace {

std::string listing_of(const std::string& siblings) {
  return R"({"id":"org/m","sha":"0123456789abcdef0123456789abcdef01234567","siblings":[)" +
         siblings + "]}";
}

// `prefix` then `filler` bytes of spaces, gzip-compressed: a small body that inflates hugely.
std::string gzip_bomb(const std::string& prefix, std::size_t filler) {
  z_stream stream{};
  REQUIRE(deflateInit2(&stream, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(1 << 20, '\0');
  std::size_t used = 0;
  auto pump = [&](const std::string& in, int flush) {
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    stream.avail_in = static_cast<uInt>(in.size());
    do {
      if (out.size() - used < 65536) out.resize(out.size() * 2);
      stream.next_out = reinterpret_cast<Bytef*>(out.data() + used);
      stream.avail_out = static_cast<uInt>(out.size() - used);
      deflate(&stream, flush);
      used = out.size() - stream.avail_out;
    } while (stream.avail_in > 0 || (flush == Z_FINISH && stream.avail_out == 0));
  };
  pump(prefix, Z_NO_FLUSH);
  const std::string spaces(1 << 20, ' ');
  for (std::size_t sent = 0; sent < filler; sent += spaces.size()) pump(spaces, Z_NO_FLUSH);
  pump("", Z_FINISH);
  deflateEnd(&stream);
  out.resize(used);
  return out;
}

std::size_t files_under(const std::filesystem::path& folder) {
  std::size_t count = 0;
  if (!std::filesystem::exists(folder)) return 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(folder)) {
    count += entry.is_regular_file() && entry.path().filename() != "metadata.yaml" ? 1 : 0;
  }
  return count;
}

}  // namespace

TEST_CASE("hostile listings end in a clean [ERROR] that says what was wrong; nothing is written") {
  HiveWithHub setup;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"rfilename":"a.gguf","size":-1})", "negative size"},
      {R"({"rfilename":"a.gguf","size":2.5})", "not a whole number"},
      {R"({"rfilename":"a.gguf","size":1e30})", "not a whole number"},
      {R"({"rfilename":"a.gguf","size":99999999999999999999})", "not a whole number"},
      {R"({"rfilename":"a.gguf","size":1},{"rfilename":"a.gguf","size":1})", "listed twice"},
      {R"({"rfilename":"a.gguf","size":"1"})", "not a number"},
      {R"("a.gguf")", "not an object"},
      {"{\"rfilename\":\"a\\u001b[31m.gguf\",\"size\":1,\"blobId\":\"x\"}", "control characters"},
      {"{\"rfilename\":\"a\xff\xfe.gguf\",\"size\":1}", "listing"},
  };
  int n = 0;
  for (const auto& hostile : cases) {
    const std::string& siblings =
        hostile.first;  // CAPTURE's lambda cannot name a binding (clang 14)
    const std::string& reason = hostile.second;
    CAPTURE(siblings);
    FixtureRepo repo;
    repo.id = "org/hostile" + std::to_string(n++);
    repo.raw_listing = listing_of(siblings);
    setup.hub.add_repo(repo);
    const SseStream stream = setup.download({{"model", repo.id}});
    CHECK(stream.terminal().starts_with("[ERROR]"));
    CHECK_MESSAGE(stream.terminal().find(reason) != std::string::npos, stream.terminal());
    CHECK(stream_text(stream).find('\x1b') == std::string::npos);  // never an escape byte out
    CHECK(files_under(model_dir(setup.hive.cache, repo.id)) == 0);
  }
  CHECK(setup.hive->client()->Get("/health")->status == 200);
}

TEST_CASE("an unrequested gzip listing that inflates past the cap is refused, memory bounded") {
  HiveWithHub setup(fast_flags({"--max-listing-mb", "8"}));
  FixtureRepo repo;
  repo.id = "org/bomb";
  repo.raw_listing = gzip_bomb(R"({"sha":"x","siblings":[)", 512u << 20);  // 512 MiB inflated
  repo.raw_listing_encoding = "gzip";
  setup.hub.add_repo(repo);
  const auto before = resident_bytes(setup.hive->pid());
  const SseStream stream = setup.download({{"model", "org/bomb"}});
  CHECK(stream.terminal().starts_with("[ERROR]"));
  CHECK(stream.terminal().find("larger than 8388608 bytes") != std::string::npos);
  CHECK(resident_bytes(setup.hive->pid()) < before + (48u << 20));
}

TEST_CASE("a listing with more files than the cap is refused before it is all read") {
  HiveWithHub setup(fast_flags({"--max-listing-files", "1000"}));
  std::string siblings;
  for (int i = 0; i < 1001; ++i) {
    if (i) siblings += ",";
    siblings += R"({"rfilename":"f)" + std::to_string(i) + R"(.bin","size":1})";
  }
  FixtureRepo repo;
  repo.id = "org/crowded";
  repo.raw_listing = listing_of(siblings);
  setup.hub.add_repo(repo);
  const SseStream stream = setup.download({{"model", "org/crowded"}});
  CHECK(stream.terminal().find("more than 1000 files") != std::string::npos);
}

TEST_CASE("a renamed repo's listing answers 307: followed on the same origin, model downloads") {
  HiveWithHub setup;
  FixtureRepo repo = tiny_repo("org/new-name");
  repo.renamed_from = "org/old-name";
  setup.hub.add_repo(repo);
  const SseStream stream = setup.download({{"model", "org/old-name"}});
  CHECK(stream.terminal() == "[DONE]");
  bool redirected = false;
  for (const auto& request : setup.hub.requests()) {
    redirected = redirected ||
                 (request.path.starts_with("/api/models/org/old-name") && request.status == 307);
  }
  CHECK(redirected);
  CHECK(setup.catalog_entry("org/old-name")["status"].as<std::string>() == "ready");
}

TEST_CASE(
    "a Content-Range that names another range or file size fails the file, nothing wrong is kept") {
  HiveWithHub setup(fast_flags({"--min-range-mb", "1", "--download-attempts", "2"}));
  FixtureRepo repo;
  repo.id = "org/liar";
  repo.files = {{"model.gguf", 3 * 1024 * 1024, true, 31}};
  setup.hub.add_repo(repo);
  setup.hub.set_faults("model.gguf", {.times = 1000, .content_range = "bytes 0-99/999999"});
  const SseStream stream = setup.download({{"model", "org/liar"}});
  CHECK(stream.terminal().starts_with("[ERROR]"));
  CHECK(stream.terminal().find("another range or file size") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(model_file(setup.hive.cache, "org/liar", "model.gguf")));
  setup.hub.set_faults("model.gguf", {.times = 0});
  CHECK(setup.download({{"model", "org/liar"}}).terminal() == "[DONE]");  // an honest Hub later
  CHECK(read_text(model_file(setup.hive.cache, "org/liar", "model.gguf")) ==
        setup.hub.content("org/liar", "model.gguf"));
}

TEST_CASE("a Hub that never answers the listing: DELETE ends the job at once, SIGTERM exits") {
  HiveWithHub setup;
  setup.hub.add_repo(tiny_repo("org/silent"));
  setup.hub.set_faults("/api/models/org/silent", {.times = 1000, .stall_after_bytes = 0});
  const auto& hive = *setup.hive.hive;
  const std::string job =
      hive.submit_job({{"operation", "model_download"}, {"model", "org/silent"}});
  REQUIRE(wait_for_state(hive, job, "running") == "running");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the listing request is out
  const auto asked = std::chrono::steady_clock::now();
  CHECK(hive.client()->Delete("/v1/jobs/" + job)->status == 200);
  CHECK(watch(hive, job).terminal() == "[CANCELLED]");
  // The read timeout is 30 s: only an abort of the request in flight ends it this soon.
  CHECK(std::chrono::steady_clock::now() - asked < std::chrono::seconds(5));

  const std::string second =
      hive.submit_job({{"operation", "model_download"}, {"model", "org/silent"}});
  REQUIRE(wait_for_state(hive, second, "running") == "running");
  CHECK(setup.hive->stop(SIGTERM, std::chrono::seconds(5)) == 0);
}

TEST_CASE(
    "a CDN that drips its headers a byte at a time: DELETE ends the job at once, SIGTERM exits") {
  HeaderDripServer drip;
  HiveWithHub setup;
  FixtureRepo repo;
  repo.id = "org/drip";
  repo.files = {{"model.gguf", 1024 * 1024, true, 7, drip.url()}};
  setup.hub.add_repo(repo);
  const auto& hive = *setup.hive.hive;
  auto wait_for_drip = [&](int connection) {
    for (int i = 0; i < 1000 && drip.connections() < connection; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(drip.connections() >= connection);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // a few bytes have dripped
  };

  const std::string job = hive.submit_job({{"operation", "model_download"}, {"model", "org/drip"}});
  wait_for_drip(1);
  const auto asked = std::chrono::steady_clock::now();
  CHECK(hive.client()->Delete("/v1/jobs/" + job)->status == 200);
  CHECK(watch(hive, job).terminal() == "[CANCELLED]");
  // Every byte resets a read timeout: only an abort of the transfer ends it this soon.
  CHECK(std::chrono::steady_clock::now() - asked < std::chrono::seconds(2));

  hive.submit_job({{"operation", "model_download"}, {"model", "org/drip"}});
  wait_for_drip(2);
  const auto signalled = std::chrono::steady_clock::now();
  CHECK(setup.hive->stop(SIGTERM, std::chrono::seconds(5)) == 0);
  CHECK(std::chrono::steady_clock::now() - signalled < std::chrono::seconds(2));
}

TEST_CASE("a server that sends more bytes than the file has: a protocol error, never kept") {
  HiveWithHub setup(fast_flags({"--connections", "1", "--download-attempts", "2"}));
  FixtureRepo repo;
  repo.id = "org/surplus";
  repo.files = {{"model.gguf", 2 * 1024 * 1024, true, 41}, {"config.json", 700, false, 42}};
  setup.hub.add_repo(repo);
  setup.hub.set_faults("model.gguf", {.times = 1000, .surplus_bytes = 4096});
  setup.hub.set_faults("config.json", {.times = 1000, .surplus_bytes = 1});
  const SseStream stream = setup.download({{"model", "org/surplus"}});
  CHECK(stream.terminal().starts_with("[ERROR]"));
  CHECK_MESSAGE(stream.terminal().find("sent more than") != std::string::npos, stream.terminal());
  CHECK_FALSE(std::filesystem::exists(model_file(setup.hive.cache, "org/surplus", "model.gguf")));
  CHECK_FALSE(std::filesystem::exists(model_file(setup.hive.cache, "org/surplus", "config.json")));
  setup.hub.set_faults("model.gguf", {.times = 0});
  setup.hub.set_faults("config.json", {.times = 0});
  CHECK(setup.download({{"model", "org/surplus"}}).terminal() == "[DONE]");  // honest later
  CHECK(read_text(model_file(setup.hive.cache, "org/surplus", "model.gguf")) ==
        setup.hub.content("org/surplus", "model.gguf"));
}
