// The store (DESIGN §16): the hive's cache is a Hugging Face cache, one whole revision at a time.
// A real hive process and the local Hub fixture; the layout is checked on disk, as a worker (or
// huggingface_hub, or llama.cpp) would read it.

#include <sys/stat.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "e2e/hive_with_hub.hpp"

using namespace rbee::testing;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::string kCommit1 = FixtureRepo{}.commit;
const std::string kCommit2 = "1111111111111111111111111111111111111111";
const std::string kCommit3 = "2222222222222222222222222222222222222222";

// Three files; `version` changes the content of weights.gguf only.
FixtureRepo evolving_repo(int version, const std::string& commit) {
  FixtureRepo repo;
  repo.id = "acme/evolving";
  repo.commit = commit;
  repo.files = {{"config.json", 700, false, 301},
                {"tokenizer/tokenizer.json", 3000, false, 302},
                {"weights.gguf", 6 * 1024 * 1024 + 7, true, 303u + 10u * version}};
  return repo;
}

std::map<std::string, std::string> contents(const HubFixture& hub, const FixtureRepo& repo) {
  std::map<std::string, std::string> files;
  for (const auto& file : repo.files) files[file.path] = hub.content(repo.id, file.path);
  return files;
}

ino_t inode_of(const std::filesystem::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return info.st_ino;
}

std::string read_ref(const std::filesystem::path& model, const std::string& ref = "main") {
  return read_text(model / "refs" / ref);
}

json model_json(const HiveProcess& hive, const std::string& id) {
  return get_json(hive, "/v1/models/" + id);
}

std::string run_job(const HiveProcess& hive, const json& body) {
  return watch(hive, hive.submit_job(body)).terminal();
}

}  // namespace

TEST_CASE(
    "an update is a whole new snapshot: the old one's readers see no byte change, the ref "
    "never names a part") {
  HiveWithHub h;
  const FixtureRepo first = evolving_repo(1, kCommit1);
  h.hub.add_repo(first);
  const auto old_files = contents(h.hub, first);
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  const auto model = model_dir(h.hive.cache, "acme/evolving");
  const auto snapshot1 = model / "snapshots" / kCommit1;
  REQUIRE(read_ref(model) == kCommit1);

  const FixtureRepo second = evolving_repo(2, kCommit2);
  h.hub.add_repo(second);
  const auto new_files = contents(h.hub, second);
  REQUIRE(new_files.at("weights.gguf") != old_files.at("weights.gguf"));
  REQUIRE(new_files.at("config.json") == old_files.at("config.json"));
  h.hub.set_rate_limit(8 * 1024 * 1024);  // the update takes a moment the watchers can see
  h.hub.clear_requests();

  // A worker holding revision 1: every file open, re-read until the update is done.
  std::map<std::string, std::unique_ptr<std::ifstream>> held;
  for (const auto& [path, content] : old_files) {
    held[path] = std::make_unique<std::ifstream>(snapshot1 / path, std::ios::binary);
  }
  std::atomic<bool> done{false};
  std::atomic<int> torn_reads{0}, incomplete_refs{0}, ref_reads{0};
  std::thread worker([&] {
    while (!done) {
      for (auto& [path, in] : held) {
        in->clear();
        in->seekg(0);
        const std::string bytes{std::istreambuf_iterator<char>(*in), {}};
        if (bytes != old_files.at(path)) ++torn_reads;
      }
    }
  });
  // Whatever refs/main names at any instant is a whole snapshot of that commit.
  std::thread poller([&] {
    while (!done) {
      std::string commit;
      try {
        commit = read_ref(model);
      } catch (const std::exception&) {
        ++incomplete_refs;  // the ref must never be missing or unreadable
        continue;
      }
      const auto& expected = commit == kCommit2 ? new_files : old_files;
      for (const auto& [path, content] : expected) {
        if (read_text(model / "snapshots" / commit / path) != content) ++incomplete_refs;
      }
      ++ref_reads;
    }
  });
  const SseStream update = h.download({{"model", "acme/evolving"}});
  done = true;
  worker.join();
  poller.join();
  REQUIRE_MESSAGE(update.terminal() == "[DONE]", stream_text(update));
  CHECK(torn_reads == 0);
  CHECK(incomplete_refs == 0);
  CHECK(ref_reads > 0);

  CHECK(read_ref(model) == kCommit2);
  const auto snapshot2 = model / "snapshots" / kCommit2;
  for (const auto& file : new_files) {  // no structured binding: CHECK_MESSAGE captures it
    CHECK_MESSAGE(read_text(snapshot2 / file.first) == file.second, file.first);
  }
  // Revision 1 stays whole until pruned; the unchanged files are one blob, fetched once.
  for (const auto& file : old_files) {
    CHECK_MESSAGE(read_text(snapshot1 / file.first) == file.second, file.first);
  }
  CHECK(inode_of(snapshot1 / "config.json") == inode_of(snapshot2 / "config.json"));
  CHECK(inode_of(snapshot1 / "tokenizer/tokenizer.json") ==
        inode_of(snapshot2 / "tokenizer/tokenizer.json"));
  CHECK(inode_of(snapshot1 / "weights.gguf") != inode_of(snapshot2 / "weights.gguf"));
  CHECK(h.content_gets("hub", "config.json").empty());
  CHECK(h.content_gets("hub", "tokenizer.json").empty());
  CHECK_FALSE(h.content_gets("cdn").empty());  // the changed file, and only it

  // The catalog: path is what a worker loads now; both revisions with their status and blobs.
  const json entry = model_json(*h.hive.hive, "acme/evolving");
  CHECK(entry["path"] == snapshot2.string());
  CHECK(entry["commit"] == kCommit2);
  CHECK(entry["refs"]["main"] == kCommit2);
  REQUIRE(entry["revisions"].size() == 2);
  for (const auto& revision : entry["revisions"]) {
    CHECK(revision["status"] == "ready");
    for (const auto& file : revision["files"]) {
      CHECK(std::filesystem::is_regular_file(file["blob"].get<std::string>()));
    }
  }
}

TEST_CASE(
    "old revisions stay until asked: model_delete of one revision, model_prune, "
    "--keep-revisions") {
  HiveWithHub h;
  const auto model = model_dir(h.hive.cache, "acme/evolving");
  const auto& hive = *h.hive.hive;
  h.hub.add_repo(evolving_repo(1, kCommit1));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  const std::string old_weights =
      std::filesystem::read_symlink(model / "snapshots" / kCommit1 / "weights.gguf").filename();
  h.hub.add_repo(evolving_repo(2, kCommit2));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  h.hub.add_repo(evolving_repo(3, kCommit3));
  const SseStream third = h.download({{"model", "acme/evolving"}});
  REQUIRE(third.terminal() == "[DONE]");
  // The default keeps every revision a ref names plus the one before: revision 1 went, with
  // the blob only it linked; the shared ones stay.
  CHECK_MESSAGE(has_action(third, "revisions_pruned"), stream_text(third));
  CHECK_FALSE(std::filesystem::exists(model / "snapshots" / kCommit1));
  CHECK_FALSE(std::filesystem::exists(model / "blobs" / old_weights));
  CHECK(std::filesystem::exists(model / "snapshots" / kCommit2 / "config.json"));
  CHECK(model_json(hive, "acme/evolving")["revisions"].size() == 2);

  // One revision by its commit: its snapshot and the blob only it held go; the model stays.
  CHECK(run_job(hive,
                {{"operation", "model_delete"}, {"id", "acme/evolving"}, {"revision", kCommit2}}) ==
        "[DONE]");
  CHECK_FALSE(std::filesystem::exists(model / "snapshots" / kCommit2));
  CHECK(read_text(model / "snapshots" / kCommit3 / "config.json") ==
        h.hub.content("acme/evolving", "config.json"));
  json entry = model_json(hive, "acme/evolving");
  CHECK(entry["status"] == "ready");
  CHECK(entry["revisions"].size() == 1);
  CHECK(run_job(hive, {{"operation", "model_delete"},
                       {"id", "acme/evolving"},
                       {"revision", "no-such-branch"}})
            .starts_with("[ERROR]"));

  // A tag on an older commit is a ref too: model_prune keeps what refs name.
  FixtureRepo tagged = evolving_repo(3, kCommit3);
  tagged.revisions = {"main", "v1"};
  h.hub.add_repo(tagged);
  REQUIRE(h.download({{"model", "acme/evolving"}, {"revision", "v1"}}).terminal() == "[DONE]");
  CHECK(read_ref(model, "v1") == kCommit3);
  CHECK(run_job(hive, {{"operation", "model_prune"}, {"id", "acme/evolving"}}) == "[DONE]");
  CHECK(std::filesystem::exists(model / "snapshots" / kCommit3));

  // The last revision takes the model with it.
  CHECK(run_job(hive,
                {{"operation", "model_delete"}, {"id", "acme/evolving"}, {"revision", "main"}}) ==
        "[DONE]");
  CHECK_FALSE(std::filesystem::exists(model));
  get_json(hive, "/v1/models/acme/evolving", 404);
}

TEST_CASE("--keep-revisions 0 removes the revision before once the ref moved") {
  HiveWithHub h(fast_flags({"--keep-revisions", "0"}));
  const auto model = model_dir(h.hive.cache, "acme/evolving");
  h.hub.add_repo(evolving_repo(1, kCommit1));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  h.hub.add_repo(evolving_repo(2, kCommit2));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  CHECK_FALSE(std::filesystem::exists(model / "snapshots" / kCommit1));
  CHECK(std::filesystem::exists(model / "snapshots" / kCommit2 / "config.json"));
  CHECK(model_json(*h.hive.hive, "acme/evolving")["revisions"].size() == 1);
}

TEST_CASE("a failed update leaves the ready revision ready, and says why on the commit it tried") {
  HiveWithHub h;
  h.hub.add_repo(evolving_repo(1, kCommit1));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  h.hub.add_repo(evolving_repo(2, kCommit2));
  h.hub.set_faults("weights.gguf", Faults{.times = 1000, .corrupt_at = 100});
  const SseStream update = h.download({{"model", "acme/evolving"}});
  CHECK(update.terminal().starts_with("[ERROR]"));
  const json entry = model_json(*h.hive.hive, "acme/evolving");
  CHECK(entry["status"] == "ready");
  CHECK(entry["path"] ==
        (model_dir(h.hive.cache, "acme/evolving") / "snapshots" / kCommit1).string());
  CHECK(read_ref(model_dir(h.hive.cache, "acme/evolving")) == kCommit1);
  bool failure_recorded = false;
  for (const auto& revision : entry["revisions"]) {
    if (revision["commit"] == kCommit2) {
      failure_recorded =
          revision["status"] == "failed" && !revision["error"].get<std::string>().empty();
    }
  }
  CHECK(failure_recorded);
}

TEST_CASE("a first download that fails says so on its revision too, and links nothing") {
  HiveWithHub h;
  h.hub.add_repo(evolving_repo(1, kCommit1));
  h.hub.set_faults("weights.gguf", Faults{.times = 1000, .corrupt_at = 100});
  CHECK(h.download({{"model", "acme/evolving"}}).terminal().starts_with("[ERROR]"));
  const json entry = model_json(*h.hive.hive, "acme/evolving");
  CHECK(entry["status"] == "failed");
  REQUIRE(entry["revisions"].size() == 1);
  CHECK(entry["revisions"][0]["status"] == "failed");
  CHECK(entry["revisions"][0]["error"] == entry["error"]);
  CHECK(entry["refs"].empty());
  CHECK_FALSE(std::filesystem::exists(model_dir(h.hive.cache, "acme/evolving") / "refs"));
  CHECK(std::filesystem::is_empty(model_dir(h.hive.cache, "acme/evolving") / "snapshots"));
}

TEST_CASE(
    "blobs another tool wrote into a shared cache are verified once and linked, not fetched") {
  HiveWithHub h;
  const FixtureRepo repo = evolving_repo(1, kCommit1);
  h.hub.add_repo(repo);
  // huggingface_hub (or llama.cpp, or the JS client) put weights.gguf in the cache already,
  // and is writing another blob right now.
  const std::string weights = h.hub.content("acme/evolving", "weights.gguf");
  const auto model = model_dir(h.hive.cache, "acme/evolving");
  const std::string blob = sha256_hex(weights);
  write_text(model / "blobs" / blob, weights);
  write_text(model / "blobs" / (std::string(64, 'a') + ".x7Yq.incomplete"), "half");
  std::filesystem::create_directories(model / "snapshots" / kCommit1);
  std::filesystem::create_symlink("../../blobs/" + blob,
                                  model / "snapshots" / kCommit1 / "weights.gguf");

  const SseStream stream = h.download({{"model", "acme/evolving"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(h.content_gets("hub", "weights.gguf").empty());
  CHECK_MESSAGE(h.content_gets("cdn").empty(), stream_text(stream));
  CHECK(read_text(model / "snapshots" / kCommit1 / "weights.gguf") == weights);
  CHECK(read_text(model / "blobs" / (std::string(64, 'a') + ".x7Yq.incomplete")) == "half");
  // A blob whose bytes do not match its name is not adopted: it is fetched and replaced.
  HiveWithHub other;
  other.hub.add_repo(repo);
  const auto other_model = model_dir(other.hive.cache, "acme/evolving");
  write_text(other_model / "blobs" / blob, std::string(weights.size(), 'x'));
  REQUIRE(other.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  CHECK(read_text(other_model / "snapshots" / kCommit1 / "weights.gguf") == weights);
}

namespace {

// A model as a hive before DESIGN §16 (schema 1) left it: files at their repo paths beside a
// schema-1 metadata.yaml, a working folder, locks under .locks/<org>/<name>/.
void write_schema1_model(const std::filesystem::path& cache, const HubFixture& hub,
                         const FixtureRepo& repo) {
  const auto folder = cache / repo.id;
  std::string files;
  std::uint64_t total = 0;
  for (const auto& file : repo.files) {
    const std::string content = hub.content(repo.id, file.path);
    write_text(folder / file.path, content);
    total += content.size();
    files += fmt::format(
        "  - path: \"{}\"\n    size: {}\n    sha256: \"{}\"\n    etag: \"{}\"\n    state: "
        "\"verified\"\n",
        file.path, content.size(), file.lfs ? sha256_hex(content) : "",
        file.lfs ? "" : git_blob_sha1_hex(content));
  }
  write_text(folder / ".rbee" / "listing.json", "{}");
  write_text(folder / "metadata.yaml",
             fmt::format("schema: 1\nid: \"{}\"\nsource: \"huggingface\"\nendpoint: \"{}\"\n"
                         "revision: \"main\"\ncommit: \"{}\"\npath: \"{}\"\nstatus: \"ready\"\n"
                         "bytes_done: {}\nbytes_total: {}\nprogress: 1\nsize: {}\nerror: \"\"\n"
                         "files:\n{}added_at: \"2026-11-01T10:00:00.000Z\"\n"
                         "updated_at: \"2026-11-01T10:00:01.000Z\"\nlast_job_id: \"job-old\"\n",
                         repo.id, hub.endpoint(), repo.commit, folder.string(), total, total, total,
                         files));
}

}  // namespace

TEST_CASE(
    "a schema-1 cache moves into the Hugging Face layout at start, with no byte fetched, "
    "also after a crash half way") {
  HubFixture hub;
  const FixtureRepo repo = evolving_repo(1, kCommit1);
  hub.add_repo(repo);
  TempDir dir;
  const auto cache = dir / "models";
  write_schema1_model(cache, hub, repo);
  // A crash half way: one file had already become its blob.
  const std::string config = hub.content(repo.id, "config.json");
  std::filesystem::create_directories(cache / "models--acme--evolving" / "blobs");
  std::filesystem::rename(cache / "acme/evolving/config.json",
                          cache / "models--acme--evolving/blobs" / git_blob_sha1_hex(config));

  HiveProcess hive(HiveOptions{cache, fast_flags(), {{"HF_ENDPOINT", hub.endpoint()}}});
  const auto model = model_dir(cache, "acme/evolving");
  CHECK_FALSE(std::filesystem::exists(cache / "acme"));
  CHECK(read_ref(model) == kCommit1);
  for (const auto& file : repo.files) {
    CHECK_MESSAGE(
        read_text(model / "snapshots" / kCommit1 / file.path) == hub.content(repo.id, file.path),
        file.path);
  }
  CHECK(std::filesystem::exists(model / ".rbee" / "listing.json"));
  const json entry = get_json(hive, "/v1/models/acme/evolving");
  CHECK(entry["status"] == "ready");
  CHECK(entry["path"] == (model / "snapshots" / kCommit1).string());
  CHECK(entry["last_job_id"] == "job-old");

  // Up to date: nothing is downloaded.
  hub.clear_requests();
  const SseStream again =
      watch(hive, hive.submit_job({{"operation", "model_download"}, {"model", "acme/evolving"}}));
  REQUIRE_MESSAGE(again.terminal() == "[DONE]", stream_text(again));
  for (const auto& request : hub.requests()) {
    CHECK_MESSAGE(request.path.find("/resolve/") == std::string::npos, request.path);
  }
  // Said once: a second start has nothing to move.
  CHECK(hive.stop(SIGTERM).value_or(-1) == 0);
  HiveProcess restarted(HiveOptions{cache, fast_flags(), {{"HF_ENDPOINT", hub.endpoint()}}});
  CHECK(get_json(restarted, "/v1/models/acme/evolving")["status"] == "ready");
}

namespace {

// tests/e2e/data/schema1-cache: the cache the last hive before the store (bd97371; schema 1, as
// ddd6752's) wrote when it downloaded this repo from rbee-hub-fixture (seeds in the fixture's
// order: LFS files first). Made by tests/e2e/data/make_schema1_cache.sh.
FixtureRepo legacy_repo() {
  FixtureRepo repo;
  repo.id = "acme/legacy";
  repo.files = {{"model.gguf", 70001, true, 1},
                {"config.json", 613, false, 2},
                {"tokenizer/tokenizer.json", 700, false, 3}};
  return repo;
}

void copy_schema1_cache(const std::filesystem::path& cache) {
  std::filesystem::copy(RBEE_TEST_DATA_DIR "/schema1-cache", cache,
                        std::filesystem::copy_options::recursive);
}

void check_migrated(const std::filesystem::path& cache, const HubFixture& hub,
                    const FixtureRepo& repo) {
  const auto model = model_dir(cache, repo.id);
  CHECK_FALSE(std::filesystem::exists(cache / "acme"));
  CHECK(read_ref(model) == repo.commit);
  for (const auto& file : repo.files) {
    CHECK_MESSAGE(
        read_text(model / "snapshots" / repo.commit / file.path) == hub.content(repo.id, file.path),
        file.path);
  }
}

}  // namespace

TEST_CASE(
    "a cache the hive before the store wrote opens as schema 2 with no download, also "
    "after SIGKILLs during the move") {
  HubFixture hub;
  const FixtureRepo repo = legacy_repo();
  hub.add_repo(repo);
  TempDir dir;
  const auto cache = dir / "models";
  copy_schema1_cache(cache);
  REQUIRE(std::filesystem::exists(cache / "acme/legacy/metadata.yaml"));
  // Kills at random instants of the start, the move among them; each restart goes on.
  std::mt19937 random(20261206);
  for (int kill = 0; kill < 8; ++kill) {
    HiveOptions starting{cache, fast_flags(), {{"HF_ENDPOINT", hub.endpoint()}}};
    starting.wait_until_serving = false;
    HiveProcess hive(starting);
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 40000));
    hive.stop(SIGKILL);
  }
  HiveProcess hive(HiveOptions{cache, fast_flags(), {{"HF_ENDPOINT", hub.endpoint()}}});
  check_migrated(cache, hub, repo);
  const json entry = get_json(hive, "/v1/models/acme/legacy");
  CHECK(entry["status"] == "ready");
  CHECK(entry["path"] == (model_dir(cache, repo.id) / "snapshots" / repo.commit).string());
  hub.clear_requests();
  const SseStream again =
      watch(hive, hive.submit_job({{"operation", "model_download"}, {"model", repo.id}}));
  REQUIRE_MESSAGE(again.terminal() == "[DONE]", stream_text(again));
  CHECK(has_action(again, "download_up_to_date"));
  for (const auto& request : hub.requests()) {
    CHECK_MESSAGE(request.path.find("/resolve/") == std::string::npos, request.path);
  }
}

TEST_CASE("the mirror serves every cached revision by ref or commit, side by side") {
  HiveWithHub h;
  h.hub.add_repo(evolving_repo(1, kCommit1));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  const std::string old_weights = h.hub.content("acme/evolving", "weights.gguf");
  h.hub.add_repo(evolving_repo(2, kCommit2));
  REQUIRE(h.download({{"model", "acme/evolving"}}).terminal() == "[DONE]");
  const std::string new_weights = h.hub.content("acme/evolving", "weights.gguf");
  h.hub.clear_requests();

  auto client = h.hive->client();
  const auto by_commit = client->Get("/hf/acme/evolving/resolve/" + kCommit1 + "/weights.gguf");
  REQUIRE(by_commit);
  CHECK(by_commit->status == 200);
  CHECK(by_commit->body == old_weights);
  const auto by_ref = client->Get("/hf/acme/evolving/resolve/main/weights.gguf");
  REQUIRE(by_ref);
  CHECK(by_ref->status == 200);
  CHECK(by_ref->body == new_weights);
  CHECK(by_ref->get_header_value("X-Repo-Commit") == kCommit2);
  const auto listing = client->Get("/hf/api/models/acme/evolving/revision/" + kCommit1);
  REQUIRE(listing);
  CHECK(listing->status == 200);
  CHECK(json::parse(listing->body)["sha"] == kCommit1);
  CHECK(h.content_gets("hub").empty());  // all of it from this hive's disk
}

TEST_CASE("a listing whose commit is not 40 hex digits fails the job before any byte is fetched") {
  HiveWithHub h;
  FixtureRepo repo = evolving_repo(1, "../../../../tmp/x");
  h.hub.add_repo(repo);
  const SseStream stream = h.download({{"model", "acme/evolving"}});
  CHECK(stream.terminal().starts_with("[ERROR]"));
  CHECK(stream_text(stream).find("not 40 hex digits") != std::string::npos);
  CHECK(h.content_gets("hub").empty());
  CHECK(h.content_gets("cdn").empty());
  CHECK_FALSE(std::filesystem::exists(model_dir(h.hive.cache, "acme/evolving") / "snapshots" /
                                      "../../../../tmp/x"));
}
