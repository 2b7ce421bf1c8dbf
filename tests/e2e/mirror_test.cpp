// The hive as a Hub mirror (DESIGN §13), end to end with real processes: the read API under
// /hf answered from the cache, ranges and errors as the Hub sends them, pull-through shared by
// every requester, hive-to-hive downloads, offline, gated models, fallbacks.

#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <set>

#include <fmt/format.h>

#include "e2e/hive_with_hub.hpp"
#include "support/raw_connection.hpp"

using namespace rbee::testing;
using namespace std::chrono_literals;

namespace {

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

std::string mirror_endpoint(const HiveProcess& hive) {
  return fmt::format("http://127.0.0.1:{}/hf", hive.port());
}

std::string file_on_disk(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

nlohmann::json json_of(const httplib::Result& result) {
  REQUIRE(result);
  return nlohmann::json::parse(result->body);
}

// A hive that downloaded `repo` from its fixture; pull-through as given.
struct CachedMirror {
  HiveWithHub env;
  explicit CachedMirror(std::vector<std::string> flags = {}) : env(fast_flags(std::move(flags))) {}
  void add_and_download(const FixtureRepo& repo) {
    env.hub.add_repo(repo);
    const auto stream = env.download({{"model", repo.id}});
    REQUIRE(stream.terminal() == "[DONE]");
  }
};

}  // namespace

TEST_CASE("mirror: a cached model's info, tree, paths-info and files answer as the Hub does") {
  CachedMirror mirror({"--mirror-pull-through=false"});
  mirror.add_and_download(tiny_repo("org/tiny"));
  const auto client = mirror.env.hive->client();
  const std::string gguf = mirror.env.hub.content("org/tiny", "model.Q4_K_M.gguf");

  SUBCASE("model info, plain and with blobs, by branch and by commit") {
    const auto info = json_of(client->Get("/hf/api/models/org/tiny"));
    CHECK(info.at("sha") == kCommit);
    CHECK(info.at("id") == "org/tiny");
    CHECK(info.at("siblings").size() == 3);
    CHECK_FALSE(info.at("siblings")[0].contains("size"));
    const auto blobs =
        json_of(client->Get("/hf/api/models/org/tiny/revision/" + kCommit + "?blobs=true"));
    bool saw_lfs = false;
    for (const auto& sibling : blobs.at("siblings")) {
      CHECK(sibling.contains("size"));
      CHECK(sibling.contains("blobId"));
      if (sibling.at("rfilename") == "model.Q4_K_M.gguf") {
        saw_lfs = true;
        CHECK(sibling.at("lfs").at("sha256") == sha256_hex(gguf));
        CHECK(sibling.at("size") == gguf.size());
      }
    }
    CHECK(saw_lfs);
  }

  SUBCASE("HEAD and GET of a file: the Hub's headers and the exact bytes") {
    const auto head = client->Head("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf");
    REQUIRE(head);
    CHECK(head->status == 200);
    CHECK(head->get_header_value("X-Repo-Commit") == kCommit);
    CHECK(head->get_header_value("ETag") == "\"" + sha256_hex(gguf) + "\"");
    CHECK(head->get_header_value("X-Linked-Etag") == "\"" + sha256_hex(gguf) + "\"");
    CHECK(head->get_header_value("X-Linked-Size") == std::to_string(gguf.size()));
    CHECK(head->get_header_value("Accept-Ranges") == "bytes");
    CHECK(head->get_header_value("Content-Length") == std::to_string(gguf.size()));
    CHECK(head->body.empty());
    const auto get = client->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf");
    REQUIRE(get);
    CHECK(get->status == 200);
    CHECK(get->body == gguf);
    const auto config = client->Get("/hf/org/tiny/resolve/" + kCommit + "/config.json");
    REQUIRE(config);
    CHECK(config->body == mirror.env.hub.content("org/tiny", "config.json"));
    CHECK(config->get_header_value("ETag").size() == 42);  // a quoted git blob id
  }

  SUBCASE("ranges: 206 with Content-Range, a suffix range, and 416 past the end") {
    const auto part =
        client->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf", {{"Range", "bytes=1000-1999"}});
    REQUIRE(part);
    CHECK(part->status == 206);
    CHECK(part->get_header_value("Content-Range") ==
          fmt::format("bytes 1000-1999/{}", gguf.size()));
    CHECK(part->body == gguf.substr(1000, 1000));
    const auto tail =
        client->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf", {{"Range", "bytes=-7"}});
    REQUIRE(tail);
    CHECK(tail->status == 206);
    CHECK(tail->body == gguf.substr(gguf.size() - 7));
    const auto beyond = client->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf",
                                    {{"Range", fmt::format("bytes={}-", gguf.size())}});
    REQUIRE(beyond);
    CHECK(beyond->status == 416);
    CHECK(beyond->get_header_value("Content-Range") == fmt::format("bytes */{}", gguf.size()));
  }

  SUBCASE("the recursive tree, paginated with Link, and paths-info") {
    std::set<std::string> paths;
    std::string next = "/hf/api/models/org/tiny/tree/main?recursive=true&limit=2";
    int pages = 0;
    while (!next.empty() && pages < 5) {
      const auto page = client->Get(next);
      REQUIRE(page);
      REQUIRE(page->status == 200);
      for (const auto& entry : nlohmann::json::parse(page->body)) {
        CHECK(entry.at("type") == "file");
        paths.insert(entry.at("path").get<std::string>());
      }
      ++pages;
      const std::string link = page->get_header_value("Link");
      next.clear();
      if (!link.empty()) {
        CHECK(link.find("rel=\"next\"") != std::string::npos);
        const auto start = link.find("/hf/");
        next = link.substr(start, link.find('>') - start);
      }
    }
    CHECK(pages == 2);
    CHECK(paths ==
          std::set<std::string>{"config.json", "model.Q4_K_M.gguf", "tokenizer/tokenizer.json"});
    const auto flat = json_of(client->Get("/hf/api/models/org/tiny/tree/main"));
    CHECK(flat.size() == 3);  // two files and the folder "tokenizer"
    const auto info = json_of(client->Post(
        "/hf/api/models/org/tiny/paths-info/main",
        R"({"paths":["model.Q4_K_M.gguf","tokenizer","missing.bin"]})", "application/json"));
    REQUIRE(info.size() == 2);
    CHECK(info[0].at("lfs").at("oid") == sha256_hex(gguf));
    CHECK(info[1].at("type") == "directory");
  }

  SUBCASE("the Hub's error codes, with a JSON body") {
    auto expect = [&](const std::string& path, int status, const std::string& code) {
      const auto answer = client->Get(path);
      REQUIRE(answer);
      CHECK_MESSAGE(answer->status == status, path);
      CHECK_MESSAGE(answer->get_header_value("X-Error-Code") == code, path);
      CHECK(nlohmann::json::parse(answer->body).at("error").is_string());
    };
    expect("/hf/api/models/org/absent", 404, "RepoNotFound");
    expect("/hf/api/models/org/tiny/revision/v9", 404, "RevisionNotFound");
    expect("/hf/org/tiny/resolve/main/absent.bin", 404, "EntryNotFound");
    expect("/hf/org/tiny/resolve/main/..%2Fmetadata.yaml", 404, "EntryNotFound");
    expect("/hf/api/models/org/tiny/tree/main/nowhere", 404, "EntryNotFound");
    expect("/hf/api/models/org/tiny/revision/" + std::string(300, 'x'), 404, "RevisionNotFound");
    expect("/hf/api/models/org/tiny/revision/ma%01in", 404, "RevisionNotFound");
  }
}

TEST_CASE("mirror: three hives, B and C behind A, fetch each byte from the Hub once") {
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "org/fleet";
  repo.files = {{"config.json", 700, false, 21},
                {"tokenizer.json", 9000, false, 22},
                {"model-00001-of-00002.safetensors", 12u << 20, true, 23},
                {"model-00002-of-00002.safetensors", 9u << 20, true, 24}};
  hub.add_repo(repo);
  std::uint64_t model_bytes = 0;
  for (const auto& file : repo.files) model_bytes += file.size;

  HiveUnderTest a(fast_flags({"--connections", "1"}), "", {{"HF_ENDPOINT", hub.endpoint()}});
  const std::map<std::string, std::string> behind_a = {{"HF_ENDPOINT", mirror_endpoint(*a.hive)}};
  // A peer's ranges past what A has on disk wait for it: a stall timeout of real networks.
  const auto peer_flags = fast_flags({"--min-range-mb", "4", "--stall-timeout-ms", "20000"});
  HiveUnderTest b(peer_flags, "", behind_a);
  HiveUnderTest c(peer_flags, "", behind_a);

  const std::string b_job = b->submit_job({{"operation", "model_download"}, {"model", repo.id}});
  const std::string c_job = c->submit_job({{"operation", "model_download"}, {"model", repo.id}});
  const auto b_stream = watch(*b.hive, b_job);
  const auto c_stream = watch(*c.hive, c_job);
  CHECK_MESSAGE(b_stream.terminal() == "[DONE]", stream_text(b_stream));
  CHECK_MESSAGE(c_stream.terminal() == "[DONE]", stream_text(c_stream));

  // Each byte left the fixture once: A's single upstream transfer served both.
  CHECK(hub.content_bytes_sent() == model_bytes);
  for (const auto* hive : {&b, &c}) {
    for (const auto& file : repo.files) {
      CHECK(file_on_disk(model_file(hive->cache, repo.id, file.path)) ==
            hub.content(repo.id, file.path));
    }
    const auto entry = YAML::LoadFile((model_dir(hive->cache, repo.id) / "metadata.yaml").string());
    CHECK(entry["status"].as<std::string>() == "ready");
  }
  // A holds the model too, downloaded by its own (visible) pull-through job.
  bool a_ready = false;
  for (int i = 0; i < 200 && !a_ready; ++i) {
    const auto model = get_json(*a.hive, "/v1/models/org/fleet");
    a_ready = model.value("status", "") == "ready";
    if (!a_ready) std::this_thread::sleep_for(50ms);
  }
  CHECK(a_ready);
  const auto jobs = get_json(*a.hive, "/v1/jobs").at("jobs");
  REQUIRE_FALSE(jobs.empty());
  CHECK(jobs[0].at("request").value("pull_through", false));
  const std::string metrics = a->client()->Get("/metrics")->body;
  CHECK(metrics.find(fmt::format("rbee_mirror_upstream_bytes_total {}", model_bytes)) !=
        std::string::npos);
  CHECK(metrics.find("rbee_mirror_pulls_total 1\n") != std::string::npos);  // B and C shared it
  // B and C took every byte from A (a range cut short by a retired connection is asked again).
  const std::string served_line = "\nrbee_mirror_bytes_served_total ";
  const auto served_at = metrics.find(served_line);
  REQUIRE(served_at != std::string::npos);
  CHECK(std::stoull(metrics.substr(served_at + served_line.size())) >= 2 * model_bytes);
}

TEST_CASE("mirror: a file read while it downloads; a checksum failure cuts the response") {
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "org/growing";
  repo.files = {{"weights.bin", 24u << 20, true, 31}, {"broken.bin", 6u << 20, true, 32}};
  hub.add_repo(repo);
  hub.set_rate_limit(8u << 20);  // the reader connects while the file is still arriving
  // Every transfer of broken.bin flips a byte: the hive's verification fails twice and gives up.
  hub.set_faults("broken.bin", Faults{.times = 10, .corrupt_at = 4u << 20});
  HiveUnderTest a(fast_flags({"--connections", "1"}), "", {{"HF_ENDPOINT", hub.endpoint()}});
  const auto client = a->client();
  client->set_read_timeout(60s);

  const auto good = client->Get("/hf/org/growing/resolve/main/weights.bin");
  REQUIRE(good);
  CHECK(good->status == 200);
  CHECK(good->body == hub.content(repo.id, "weights.bin"));
  // Its bytes came from the part file as the download committed them: one pull, one transfer.
  CHECK(get_json(*a.hive, "/v1/jobs").at("jobs").size() == 1);

  // The request starts the pull and streams it; the hive's verification then fails, and the
  // response is cut short before its last byte: never the whole, wrong file.
  const auto bad = client->Get("/hf/org/growing/resolve/main/broken.bin");
  CHECK_FALSE(bad);
  CHECK(bad.error() == httplib::Error::Read);
}

TEST_CASE("mirror: --offline serves the cache and never contacts the Hub") {
  TempDir shared;
  HubFixture hub;
  hub.add_repo(tiny_repo("org/tiny"));
  hub.add_repo(tiny_repo("org/other"));
  const std::filesystem::path cache = shared / "models";
  std::filesystem::create_directories(cache);
  const std::map<std::string, std::string> env = {{"HF_ENDPOINT", hub.endpoint()},
                                                  {"HF_HOME", (shared / "hf-home").string()}};
  {
    HiveProcess online(HiveOptions{cache, fast_flags(), env});
    const auto stream =
        watch(online, online.submit_job({{"operation", "model_download"}, {"model", "org/tiny"}}));
    REQUIRE(stream.terminal() == "[DONE]");
  }
  hub.clear_requests();
  HiveProcess offline(HiveOptions{cache, fast_flags({"--offline"}), env});
  const auto client = offline.client();
  const auto served = client->Get("/hf/org/tiny/resolve/main/config.json");
  REQUIRE(served);
  CHECK(served->status == 200);
  CHECK(served->body == hub.content("org/tiny", "config.json"));
  const auto missing = client->Get("/hf/api/models/org/other");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(missing->get_header_value("X-Error-Code") == "RepoNotFound");
  CHECK(missing->body.find("offline") != std::string::npos);
  const auto cached =
      watch(offline, offline.submit_job({{"operation", "model_download"}, {"model", "org/tiny"}}));
  CHECK(cached.terminal() == "[DONE]");
  const auto job = offline.submit_job({{"operation", "model_download"}, {"model", "org/other"}});
  const auto refused = watch(offline, job);
  CHECK(refused.terminal().starts_with("[ERROR]"));
  CHECK(refused.terminal().find("offline") != std::string::npos);
  CHECK(get_json(offline, "/v1/jobs/" + job).at("error_code") == "not_in_cache");
  CHECK(hub.requests().empty());
}

TEST_CASE("mirror: a gated model is served only to requests with the hive's API token") {
  HubFixture hub;
  FixtureRepo gated = tiny_repo("org/gated");
  gated.access = RepoAccess::gated;
  hub.add_repo(gated);
  hub.set_valid_token("hf_granted");
  const std::map<std::string, std::string> env = {{"HF_ENDPOINT", hub.endpoint()},
                                                  {"HF_TOKEN", "hf_granted"}};

  SUBCASE("a hive without an API token never serves it") {
    HiveUnderTest open(fast_flags(), "", env);
    const auto answer = open->client()->Get("/hf/api/models/org/gated");  // pulled, then refused
    REQUIRE(answer);
    CHECK(answer->status == 401);
    CHECK(answer->get_header_value("X-Error-Code") == "GatedRepo");
    const auto file = open->client()->Get("/hf/org/gated/resolve/main/config.json");
    REQUIRE(file);
    CHECK(file->status == 401);
    CHECK(file->body.find(hub.content("org/gated", "config.json")) == std::string::npos);
  }
  SUBCASE("a hive with an API token serves it with the token, and 401 without") {
    HiveUnderTest guarded(fast_flags({"--api-token", "peer-token"}), "peer-token", env);
    httplib::Client anonymous("127.0.0.1", guarded->port());
    const auto refused = anonymous.Get("/hf/org/gated/resolve/main/config.json");
    REQUIRE(refused);
    CHECK(refused->status == 401);
    const auto served = guarded->client()->Get("/hf/org/gated/resolve/main/config.json");
    REQUIRE(served);
    CHECK(served->status == 200);
    CHECK(served->body == hub.content("org/gated", "config.json"));
  }
}

TEST_CASE("sources: a dead peer mirror falls back to the Hub; fallbacks models skip what fails") {
  HubFixture hub;
  hub.add_repo(tiny_repo("org/tiny"));
  FixtureRepo gated = tiny_repo("org/gated");
  gated.access = RepoAccess::gated;
  hub.add_repo(gated);
  const int dead = free_port();  // nothing listens: the peer mirror is down
  HiveUnderTest b(fast_flags({"--fallback-endpoint", hub.endpoint()}), "",
                  {{"HF_ENDPOINT", fmt::format("http://127.0.0.1:{}/hf", dead)},
                   {"HF_TOKEN", "peer-token-never-for-the-hub"}});

  SUBCASE("--fallback-endpoint, and the peer's token stays with the peer") {
    const auto stream =
        watch(*b.hive, b->submit_job({{"operation", "model_download"}, {"model", "org/tiny"}}));
    CHECK_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
    CHECK(has_action(stream, "download_endpoint_fallback"));
    CHECK(file_on_disk(model_file(b.cache, "org/tiny", "config.json")) ==
          hub.content("org/tiny", "config.json"));
    for (const auto& request : hub.requests()) CHECK(request.authorization.empty());
  }
  SUBCASE("fallbacks: missing, then gated without a token, then one that exists") {
    const auto stream = watch(*b.hive, b->submit_job({{"operation", "model_download"},
                                                      {"model", "org/missing:model.Q4_K_M.gguf"},
                                                      {"fallbacks", {"org/gated", "org/tiny"}}}));
    CHECK_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
    std::vector<std::string> reasons;
    nlohmann::json data;
    for (const auto& event : stream.events()) {
      if (event.is_terminal()) continue;
      const auto json = event.json();
      if (json.value("action", "") == "download_fallback") reasons.push_back(json.at("human"));
      if (json.value("type", "") == "data") data = json.at("payload");
    }
    REQUIRE(reasons.size() == 2);
    CHECK(reasons[0].find("repo_not_found") != std::string::npos);
    CHECK(reasons[1].find("gated_repo") != std::string::npos);
    CHECK(data.at("model") == "org/tiny");
    CHECK(data.at("requested") == "org/missing:model.Q4_K_M.gguf");
    CHECK(data.at("skipped").size() == 2);
    CHECK(get_json(*b.hive, "/v1/models/org/tiny").at("status") == "ready");
  }
  SUBCASE("when every model fails, the error names each reason") {
    const auto stream = watch(*b.hive, b->submit_job({{"operation", "model_download"},
                                                      {"model", "org/missing"},
                                                      {"fallbacks", {"org/gated"}}}));
    const std::string terminal = stream.terminal();
    CHECK(terminal.starts_with("[ERROR]"));
    CHECK(terminal.find("org/missing") != std::string::npos);
    CHECK(terminal.find("org/gated") != std::string::npos);
  }
}

namespace {

// Reads exactly `length` bytes (or fewer if the connection ends) from a raw connection.
std::string read_exactly(const RawConnection& connection, std::size_t length) {
  std::string bytes(length, '\0');
  std::size_t got = 0;
  while (got < length) {
    const ssize_t n = ::recv(connection.fd(), bytes.data() + got, length - got, 0);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  bytes.resize(got);
  return bytes;
}

}  // namespace

// Sanitizers multiply memory (shadow bytes for every thread and buffer) and time: there the test
// checks 10 readers of a smaller file, not the resident memory.
// (GCC defines __SANITIZE_*__; clang, which builds the ASan suite, answers __has_feature.)
#if defined(__has_feature)
#define RBEE_HAS_FEATURE(x) __has_feature(x)
#else
#define RBEE_HAS_FEATURE(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    RBEE_HAS_FEATURE(address_sanitizer) || RBEE_HAS_FEATURE(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

TEST_CASE("mirror: memory stays flat while 50 clients read a 1 GiB file at once") {
  constexpr std::uint64_t kSize = kSanitized ? 128ULL << 20 : 1ULL << 30;
  constexpr std::uint64_t kSeed = 41;
  constexpr int kClients = kSanitized ? 10 : 50;  // a reader idle 15 s is dropped (write timeout)
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "org/big";
  repo.files = {{"model.gguf", kSize, true, kSeed}};
  hub.add_repo(repo);
  HiveUnderTest a(fast_flags(), "", {{"HF_ENDPOINT", hub.endpoint()}});
  const auto stream =
      watch(*a.hive, a->submit_job({{"operation", "model_download"}, {"model", repo.id}}));
  REQUIRE(stream.terminal() == "[DONE]");

  const std::uint64_t before = resident_bytes(a->pid());
  std::uint64_t peak = before;
  std::vector<std::unique_ptr<RawConnection>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto client = std::make_unique<RawConnection>(a->port());
    // Each starts at its own place in the file, so the readers share nothing but the file.
    const std::uint64_t offset = static_cast<std::uint64_t>(i) * (kSize / kClients);
    REQUIRE(
        client->send(fmt::format("GET /hf/org/big/resolve/main/model.gguf HTTP/1.1\r\n"
                                 "Host: 127.0.0.1\r\nRange: bytes={}-\r\n\r\n",
                                 offset)));
    clients.push_back(std::move(client));
  }
  // Every client reads its head and 4 MiB in turns while all 50 responses are open (the hive
  // blocks on the clients' full socket buffers in between).
  constexpr std::size_t kChunk = 1 << 20;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < kClients; ++i) {
      const std::uint64_t offset = static_cast<std::uint64_t>(i) * (kSize / kClients);
      if (round == 0) {
        std::string head;
        while (!head.ends_with("\r\n\r\n")) {
          const std::string byte = read_exactly(*clients[i], 1);
          REQUIRE(byte.size() == 1);
          head += byte;
        }
        CHECK(head.starts_with("HTTP/1.1 206"));
      }
      const std::string bytes = read_exactly(*clients[i], kChunk);
      REQUIRE(bytes.size() == kChunk);
      CHECK(bytes == generated_bytes(kSeed, offset + round * kChunk, kChunk));
    }
    peak = std::max(peak, resident_bytes(a->pid()));
  }
  MESSAGE("hive RSS before ", before >> 20, " MiB, peak with 50 readers ", peak >> 20, " MiB");
  // A bounded buffer per response (128 KiB) and a thread each: far below the file's size.
  if (!kSanitized) CHECK(peak - before < (48u << 20));
}

TEST_CASE("mirror: a web page cannot make a hive without a token pull anything") {
  HiveWithHub env;
  env.hub.add_repo(tiny_repo("org/tiny"));
  const auto client = env.hive->client();
  for (const httplib::Headers& browser : {httplib::Headers{{"Sec-Fetch-Site", "cross-site"}},
                                          httplib::Headers{{"Origin", "http://evil.example"}}}) {
    const auto answer = client->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf", browser);
    REQUIRE(answer);
    CHECK(answer->status == 404);
    CHECK(answer->body.find("web page") != std::string::npos);
  }
  CHECK(get_json(*env.hive.hive, "/v1/jobs").at("jobs").empty());
  CHECK(env.hub.requests().empty());
  // The same request from a Hub client pulls it.
  const auto pulled = client->Get("/hf/org/tiny/resolve/main/config.json");
  REQUIRE(pulled);
  CHECK(pulled->status == 200);
  CHECK(pulled->body == env.hub.content("org/tiny", "config.json"));
}

TEST_CASE("mirror: a peer killed mid-download resumes from the mirror with a range") {
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "org/resume";
  repo.files = {{"weights.bin", 24u << 20, true, 51}};
  hub.add_repo(repo);
  hub.set_rate_limit(6u << 20);  // A is still pulling while B is killed
  HiveUnderTest a(fast_flags({"--connections", "1"}), "", {{"HF_ENDPOINT", hub.endpoint()}});
  TempDir shared;
  const std::filesystem::path cache = shared / "models";
  std::filesystem::create_directories(cache);
  const HiveOptions b_options{
      cache,
      fast_flags({"--connections", "1", "--stall-timeout-ms", "20000"}),
      {{"HF_ENDPOINT", mirror_endpoint(*a.hive)}, {"HF_HOME", (shared / "hf-home").string()}}};
  const nlohmann::json download = {{"operation", "model_download"}, {"model", repo.id}};
  {
    HiveProcess b(b_options);
    b.submit_job(download);
    REQUIRE(wait_for_part(model_dir(cache, repo.id), 4u << 20));
    b.stop(SIGKILL);
  }
  const std::uint64_t kept = part_bytes(model_dir(cache, repo.id));
  CHECK(kept >= (4u << 20));
  HiveProcess b(b_options);
  const auto stream = watch(b, b.submit_job(download));
  CHECK_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(file_on_disk(model_file(cache, repo.id, "weights.bin")) ==
        hub.content(repo.id, "weights.bin"));
  // The restarted B asked A for the rest only (a 206), and the fixture sent the file once.
  const std::string metrics = a->client()->Get("/metrics")->body;
  CHECK(metrics.find("route=\"/hf/{repo}/resolve/{rev}/{path}\",status=\"206\"") !=
        std::string::npos);
  CHECK(hub.content_bytes_sent() == repo.files[0].size);
}

TEST_CASE("mirror: a peer's request for another commit never moves this hive's model") {
  const std::string c2 = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";
  const std::string c1 = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
  CachedMirror mirror;  // pull-through on
  FixtureRepo current = tiny_repo("org/m");
  current.commit = c2;
  mirror.add_and_download(current);
  const std::string config_c2 = mirror.env.hub.content("org/m", "config.json");
  const auto cache = mirror.env.hive.cache;
  const std::string entry_before = file_on_disk(model_dir(cache, "org/m") / "metadata.yaml");
  // Upstream, the repo's older commit (config.json differs), also tagged v1.
  FixtureRepo old = tiny_repo("org/m");
  old.commit = c1;
  old.revisions = {"v1"};
  old.files[0].seed = 99;
  mirror.env.hub.add_repo(old);
  const auto client = mirror.env.hive->client();

  for (const std::string& revision : {c1, std::string("v1")}) {
    CAPTURE(revision);
    const auto answer = client->Get("/hf/org/m/resolve/" + revision + "/config.json");
    REQUIRE(answer);
    CHECK(answer->status == 404);
    CHECK(answer->get_header_value("X-Error-Code") == "RevisionNotFound");
    CHECK(answer->body.find("serves no other revision") != std::string::npos);
  }
  // The model is as it was: its entry (commit, files, status), its bytes.
  const auto entry = mirror.env.catalog_entry("org/m");
  CHECK(entry["commit"].as<std::string>() == c2);
  CHECK(entry["revision"].as<std::string>() == "main");
  CHECK(entry["status"].as<std::string>() == "ready");
  CHECK(entry["files"].size() == 3);
  CHECK(file_on_disk(model_dir(cache, "org/m") / "metadata.yaml") == entry_before);
  CHECK(file_on_disk(model_file(cache, "org/m", "config.json")) == config_c2);
  // main and its commit are still served from the cache, with no new pull.
  const auto jobs_before = get_json(*mirror.env.hive.hive, "/v1/jobs").at("jobs").size();
  for (const std::string& revision : {std::string("main"), c2}) {
    const auto served = client->Get("/hf/org/m/resolve/" + revision + "/config.json");
    REQUIRE(served);
    CHECK(served->status == 200);
    CHECK(served->body == config_c2);
  }
  CHECK(get_json(*mirror.env.hive.hive, "/v1/jobs").at("jobs").size() == jobs_before);
}

TEST_CASE("mirror: HEAD answers as GET would for a listed file the hive may not pull") {
  SUBCASE("pull-through off") {
    CachedMirror mirror({"--mirror-pull-through=false"});
    mirror.env.hub.add_repo(tiny_repo("org/tiny"));
    REQUIRE(mirror.env.download({{"model", "org/tiny"}, {"include", {"config.json"}}}).terminal() ==
            "[DONE]");
    const auto client = mirror.env.hive->client();
    for (const std::string& method : {"HEAD", "GET"}) {
      CAPTURE(method);
      const auto answer = method == "HEAD"
                              ? client->Head("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf")
                              : client->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf");
      REQUIRE(answer);
      CHECK(answer->status == 404);
      CHECK(answer->get_header_value("X-Error-Code") == "EntryNotFound");
      CHECK_FALSE(answer->has_header("ETag"));
    }
    const auto head = client->Head("/hf/org/tiny/resolve/main/config.json");  // on disk
    REQUIRE(head);
    CHECK(head->status == 200);
  }
  SUBCASE("a request from a web page, to a hive without a token") {
    CachedMirror mirror;
    mirror.env.hub.add_repo(tiny_repo("org/tiny"));
    REQUIRE(mirror.env.download({{"model", "org/tiny"}, {"include", {"config.json"}}}).terminal() ==
            "[DONE]");
    const auto head = mirror.env.hive->client()->Head("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf",
                                                      {{"Sec-Fetch-Site", "cross-site"}});
    REQUIRE(head);
    CHECK(head->status == 404);
    CHECK(get_json(*mirror.env.hive.hive, "/v1/jobs").at("jobs").size() == 1);  // no pull
  }
}

TEST_CASE("mirror: a peer's parallel file pulls of one model wait without holding download slots") {
  HubFixture hub;
  FixtureRepo big;
  big.id = "org/big";
  big.files = {{"a.bin", 12u << 20, true, 41}, {"b.bin", 4096, false, 42}};
  hub.add_repo(big);
  hub.add_repo(tiny_repo("org/other"));
  hub.set_rate_limit(2u << 20);  // a.bin takes ~6 s on its one connection
  HiveUnderTest hive(fast_flags({"--connections", "1", "--max-concurrent-downloads", "2"}), "",
                     {{"HF_ENDPOINT", hub.endpoint()}});
  auto jobs_of = [&] { return get_json(*hive.hive, "/v1/jobs").at("jobs"); };
  std::string a_body, b_body;
  std::thread reader_a([&] {
    auto client = hive->client();
    client->set_read_timeout(120s);
    if (const auto answer = client->Get("/hf/org/big/resolve/main/a.bin")) a_body = answer->body;
  });
  for (int i = 0; i < 500 && part_bytes(model_dir(hive.cache, "org/big")) == 0; ++i)
    std::this_thread::sleep_for(10ms);
  std::thread reader_b([&] {
    auto client = hive->client();
    client->set_read_timeout(120s);
    if (const auto answer = client->Get("/hf/org/big/resolve/main/b.bin")) b_body = answer->body;
  });
  // b.bin's own pull waits for org/big's lock, which a.bin's pull holds.
  bool b_waiting = false;
  for (int i = 0; i < 500 && !b_waiting; ++i) {
    b_waiting = jobs_of().size() == 2;
    if (!b_waiting) std::this_thread::sleep_for(10ms);
  }
  REQUIRE(b_waiting);
  std::this_thread::sleep_for(300ms);  // b's job reaches its wait for the lock
  // A download of another model gets the second slot at once: b's pull does not hold it.
  const auto other = watch(
      *hive.hive, hive->submit_job({{"operation", "model_download"}, {"model", "org/other"}}));
  CHECK(other.terminal() == "[DONE]");
  const auto said = actions(other);
  CHECK(std::find(said.begin(), said.end(), "download_queued") == said.end());
  reader_a.join();
  reader_b.join();
  CHECK(a_body == hub.content("org/big", "a.bin"));
  CHECK(b_body == hub.content("org/big", "b.bin"));
}

TEST_CASE("mirror: a peer's pull starts at once while this hive's own downloads fill every slot") {
  HubFixture hub;
  FixtureRepo big;
  big.id = "org/big";
  big.files = {{"weights.bin", 24u << 20, true, 51}};
  hub.add_repo(big);
  hub.add_repo(tiny_repo("org/small"));
  hub.set_faults("weights.bin", Faults{.times = 1, .bytes_per_second = 1u << 20});  // ~24 s
  HiveUnderTest hive(fast_flags({"--connections", "1", "--max-concurrent-downloads", "1",
                                 "--max-concurrent-jobs", "1"}),
                     "", {{"HF_ENDPOINT", hub.endpoint()}});
  const auto own = hive->submit_job({{"operation", "model_download"}, {"model", "org/big"}});
  REQUIRE(wait_for_part(model_dir(hive.cache, "org/big"), 1));
  // A peer asks for a small file of a model this hive lacks: its pull neither queues behind
  // the running job (the router's one long-running thread) nor waits for its slot.
  auto client = hive->client();
  client->set_read_timeout(60s);
  const auto answer = client->Get("/hf/org/small/resolve/main/config.json");
  REQUIRE(answer);
  CHECK(answer->status == 200);
  CHECK(answer->body == hub.content("org/small", "config.json"));
  CHECK(get_json(*hive.hive, "/v1/jobs/" + own).at("state") == "running");
  REQUIRE(hive->client()->Delete("/v1/jobs/" + own));
}
