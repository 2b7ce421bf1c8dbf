// The cache against full disks, crashes, a second hive and planted symlinks (DESIGN §12): a real
// hive process, the local Hub fixture, and a real small file system where the test may mount one.

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <random>

#include <fmt/format.h>
#include <rbee/catalog/model_catalog.hpp>

#include "e2e/hive_with_hub.hpp"

using namespace rbee::testing;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

HiveOptions options_for(const std::filesystem::path& cache, const HubFixture& hub,
                        std::vector<std::string> flags = fast_flags()) {
  return HiveOptions{
      cache,
      std::move(flags),
      {{"HF_ENDPOINT", hub.endpoint()}, {"HF_HOME", (cache.parent_path() / "hf-home").string()}}};
}

std::string submit_download(const HiveProcess& hive, const std::string& model) {
  return hive.submit_job({{"operation", "model_download"}, {"model", model}});
}

std::uint64_t range_start(const RecordedRequest& request) {
  if (!request.range.starts_with("bytes=")) return 0;
  return std::stoull(request.range.substr(6));
}

// A tmpfs of `megabytes` mounted at `folder` for the test's life; unmounted by the destructor.
class SmallFileSystem {
 public:
  SmallFileSystem(const std::filesystem::path& folder, int megabytes) : folder_(folder) {
    std::filesystem::create_directories(folder);
    const std::string options = fmt::format("size={}m", megabytes);
    mounted_ = ::mount("tmpfs", folder.c_str(), "tmpfs", 0, options.c_str()) == 0;
    if (!mounted_) reason_ = std::strerror(errno);
  }
  ~SmallFileSystem() {
    if (mounted_) ::umount2(folder_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& reason() const { return reason_; }

  // Writes a file until the file system is full; returns its path.
  std::filesystem::path fill() const {
    const auto filler = folder_ / "filler";
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const std::string block(64 * 1024, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    ::close(fd);
    return filler;
  }

 private:
  std::filesystem::path folder_;
  bool mounted_ = false;
  std::string reason_;
};

}  // namespace

TEST_CASE("a full disk fails the download with a disk error, the hive serves on, and it resumes") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: mounting a tmpfs for the cache needs root (CI runs as root)");
    return;
  }
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "acme/full";
  repo.files = {{"config.json", 600, false, 91}, {"model.gguf", 8 * 1024 * 1024 + 11, true, 92}};
  hub.add_repo(repo);
  hub.set_rate_limit(4 * 1024 * 1024);
  TempDir dir;
  const auto cache = dir / "models";
  SmallFileSystem disk(cache, 12);
  if (!disk.mounted()) {
    MESSAGE("skipped: cannot mount a tmpfs here: " << disk.reason());
    return;
  }
  // One connection: no preallocation, so the disk fills while the bytes arrive.
  HiveProcess hive(options_for(cache, hub, fast_flags({"--connections", "1"})));
  const std::string job = submit_download(hive, "acme/full");
  REQUIRE(wait_for_part(model_dir(cache, "acme/full"), 1024 * 1024));
  const auto filler = disk.fill();

  const SseStream failed = watch(hive, job);
  const std::string text = stream_text(failed);
  INFO(text);
  CHECK(failed.terminal().starts_with("[ERROR]"));
  CHECK(text.find("disk full") != std::string::npos);
  CHECK(text.find("No space left on device") != std::string::npos);
  CHECK(text.find((model_dir(cache, "acme/full")).string()) != std::string::npos);  // the folder
  CHECK(text.find("still to download") != std::string::npos);  // the space needed
  // The daemon serves on, and the catalog entry is still a readable document.
  CHECK(hive.client()->Get("/health")->status == 200);
  const json entry = get_json(hive, "/v1/models/acme/full");
  CHECK((entry["status"] == "failed" || entry["status"] == "downloading"));
  CHECK_NOTHROW(YAML::LoadFile((model_dir(cache, "acme/full") / "metadata.yaml").string()));
  const std::uint64_t kept = part_bytes(model_dir(cache, "acme/full"));
  CHECK(kept > 0);

  std::filesystem::remove(filler);
  hub.set_rate_limit(0);
  hub.clear_requests();
  const SseStream resumed = watch(hive, submit_download(hive, "acme/full"));
  REQUIRE_MESSAGE(resumed.terminal() == "[DONE]", stream_text(resumed));
  CHECK(read_text(model_file(cache, "acme/full", "model.gguf")) ==
        hub.content("acme/full", "model.gguf"));
  std::uint64_t first = UINT64_MAX;
  for (const auto& r : hub.requests()) {
    if (r.listener == "cdn" && r.method == "GET") first = std::min(first, range_start(r));
  }
  CHECK(first == kept);  // resumed where the disk ran out, nothing fetched twice
}

TEST_CASE("two hives sharing a cache: a delete during the other's download is refused") {
  HiveWithHub first;
  FixtureRepo repo;
  repo.id = "acme/shared";
  repo.files = {{"model.gguf", 16 * 1024 * 1024, true, 93}};
  first.hub.add_repo(repo);
  first.hub.set_rate_limit(8 * 1024 * 1024);
  HiveProcess second(options_for(first.hive.cache, first.hub));

  const std::string download = submit_download(*first.hive.hive, "acme/shared");
  REQUIRE(wait_for_part(model_dir(first.hive.cache, "acme/shared"), 1));
  const SseStream refused =
      watch(second, second.submit_job({{"operation", "model_delete"}, {"id", "acme/shared"}}));
  CHECK(refused.terminal().starts_with("[ERROR]"));
  CHECK(stream_text(refused).find("being downloaded") != std::string::npos);

  CHECK(watch(*first.hive.hive, download).terminal() == "[DONE]");
  CHECK(read_text(model_file(first.hive.cache, "acme/shared", "model.gguf")) ==
        first.hub.content("acme/shared", "model.gguf"));
  const SseStream deleted =
      watch(second, second.submit_job({{"operation", "model_delete"}, {"id", "acme/shared"}}));
  CHECK(deleted.terminal() == "[DONE]");
  CHECK_FALSE(std::filesystem::exists(model_dir(first.hive.cache, "acme/shared")));
  get_json(*first.hive.hive, "/v1/models/acme/shared", 404);
}

TEST_CASE("a delete a killed hive left half done is finished at the next start") {
  HubFixture hub;
  TempDir dir;
  const auto cache = dir / "models";
  {
    rbee::catalog::ModelCatalog catalog(cache);
    catalog.update(rbee::catalog::parse_model_id("acme/gone"), [](rbee::catalog::ModelEntry& e) {
      e.status = rbee::catalog::ModelStatus::deleting;
    });
    write_text(model_file(cache, "acme/gone", "weights.bin"), "left over");
  }
  HiveProcess hive(options_for(cache, hub));
  get_json(hive, "/v1/models/acme/gone", 404);
  CHECK_FALSE(std::filesystem::exists(model_dir(cache, "acme/gone")));
}

TEST_CASE("a symlinked model folder fails the job with a clear error, its target untouched") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));
  TempDir outside;
  std::filesystem::create_symlink(outside.path(), model_dir(h.hive.cache, "acme/tiny"));
  const SseStream stream = h.download({{"model", "acme/tiny"}});
  CHECK(stream.terminal().starts_with("[ERROR]"));
  CHECK(stream_text(stream).find("symlink") != std::string::npos);
  CHECK(std::filesystem::is_empty(outside.path()));
  CHECK(h.hive->client()->Get("/health")->status == 200);
}

// SIGKILL at random instants of multi-file and ranged downloads, restarting each time: the
// catalog always parses, a file marked verified always has the right bytes, and in the end
// every file verifies.
TEST_CASE("a SIGKILL soak: 20 kills at random instants lose nothing that was committed") {
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "acme/soak";
  repo.files = {{"config.json", 700, false, 101},
                {"tokenizer/tokenizer.json", 90 * 1024, false, 102},
                {"merges.txt", 300 * 1024, false, 103},
                {"model-00001-of-00002.safetensors", 20 * 1024 * 1024 + 5, true, 104},
                {"model-00002-of-00002.safetensors", 9 * 1024 * 1024 + 7, true, 105},
                {"extra.gguf", 3 * 1024 * 1024 + 1, true, 106}};
  hub.add_repo(repo);
  hub.set_rate_limit(2 * 1024 * 1024);  // per connection: each run gets a few MiB done
  std::uint64_t model_bytes = 0;
  for (const auto& file : repo.files) model_bytes += file.size;
  TempDir dir;
  const auto cache = dir / "models";
  const auto flags = fast_flags({"--connections", "4", "--min-range-mb", "1"});
  std::mt19937 random(20261130);
  const auto started = std::chrono::steady_clock::now();

  auto check_committed_state = [&](int kill) {
    const auto metadata = model_dir(cache, "acme/soak") / "metadata.yaml";
    if (!std::filesystem::exists(metadata)) return;
    INFO("after kill " << kill);
    YAML::Node entry;
    REQUIRE_NOTHROW(entry = YAML::LoadFile(metadata.string()));
    CHECK(entry["schema"].as<int>() == 2);
    for (const auto& file : entry["files"]) {
      if (file["state"].as<std::string>() != "verified") continue;
      const auto path = file["path"].as<std::string>();
      CHECK_MESSAGE(read_text(blob_of(entry, path)) == hub.content("acme/soak", path), path);
    }
    // A ref names a whole snapshot, or nothing yet.
    const auto ref = model_dir(cache, "acme/soak") / "refs" / "main";
    if (std::filesystem::exists(ref)) {
      for (const auto& file : repo.files) {
        const auto linked =
            model_dir(cache, "acme/soak") / "snapshots" / read_text(ref) / file.path;
        CHECK_MESSAGE(read_text(linked) == hub.content("acme/soak", file.path), file.path);
      }
    }
  };

  constexpr int kKills = 20;
  for (int kill = 1; kill <= kKills; ++kill) {
    HiveProcess hive(options_for(cache, hub, flags));
    submit_download(hive, "acme/soak");
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + random() % 1200));
    CHECK_FALSE(hive.stop(SIGKILL).has_value());
    check_committed_state(kill);
  }
  hub.set_rate_limit(0);
  HiveProcess hive(options_for(cache, hub, flags));
  const SseStream last = watch(hive, submit_download(hive, "acme/soak"));
  REQUIRE_MESSAGE(last.terminal() == "[DONE]", stream_text(last));
  for (const auto& file : repo.files) {
    CHECK_MESSAGE(
        read_text(model_file(cache, "acme/soak", file.path)) == hub.content("acme/soak", file.path),
        file.path);
  }
  CHECK(get_json(hive, "/v1/models/acme/soak")["status"] == "ready");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const std::uint64_t sent = hub.content_bytes_sent();
  std::fprintf(stderr,
               "soak: %d kills, model %llu bytes, %llu bytes sent by the Hub (%.1f%% re-fetched), "
               "%.1f s\n",
               kKills, static_cast<unsigned long long>(model_bytes),
               static_cast<unsigned long long>(sent),
               100.0 * (static_cast<double>(sent) - static_cast<double>(model_bytes)) /
                   static_cast<double>(model_bytes),
               seconds);
  // Resumes, never restarts: a kill loses at most what each connection had not yet persisted
  // (its 1 MiB write batch, and for ranges up to 1 s of bytes before the sidecar's next write).
  const std::uint64_t loss_per_kill = 4 * (1024 * 1024 + 2 * 1024 * 1024);
  CHECK(sent <= model_bytes + kKills * loss_per_kill);
}

TEST_CASE("a part an earlier hive left beside its file (<path>.part) is adopted and resumed") {
  HiveWithHub h(fast_flags({"--connections", "1"}));
  FixtureRepo repo;
  repo.id = "acme/upgraded";
  repo.files = {{"model.gguf", 4 * 1024 * 1024 + 3, true, 111}};
  h.hub.add_repo(repo);
  const std::string content = h.hub.content("acme/upgraded", "model.gguf");
  const std::uint64_t kept = 1024 * 1024 + 17;
  write_text(model_dir(h.hive.cache, "acme/upgraded") / "model.gguf.part", content.substr(0, kept));

  const SseStream stream = h.download({{"model", "acme/upgraded"}});
  REQUIRE_MESSAGE(stream.terminal() == "[DONE]", stream_text(stream));
  CHECK(read_text(model_file(h.hive.cache, "acme/upgraded", "model.gguf")) == content);
  CHECK_FALSE(
      std::filesystem::exists(model_dir(h.hive.cache, "acme/upgraded") / "model.gguf.part"));
  const auto gets = h.content_gets("cdn");
  REQUIRE(gets.size() == 1);
  CHECK(range_start(gets[0]) == kept);  // resumed, not fetched again
}

namespace {

// The hive's open descriptors of files under `folder` (its /proc/<pid>/fd links).
std::vector<std::string> descriptors_under(const HiveProcess& hive,
                                           const std::filesystem::path& folder) {
  std::vector<std::string> found;
  std::error_code ec;
  const auto canonical = std::filesystem::canonical(folder, ec).string();
  for (const auto& fd :
       std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", hive.pid()), ec)) {
    const auto target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.starts_with(canonical + "/")) found.push_back(target);
  }
  return found;
}

// A cache in `dir` where a hive has downloaded `org/tiny` from `hub`.
std::filesystem::path cache_with_tiny(const TempDir& dir, HubFixture& hub) {
  const auto cache = dir / "models";
  hub.add_repo(tiny_repo("org/tiny"));
  HiveProcess hive(options_for(cache, hub));
  REQUIRE(watch(hive, submit_download(hive, "org/tiny")).terminal() == "[DONE]");
  return cache;
}

}  // namespace

TEST_CASE(
    "a FIFO planted in the cache is refused at once: the catalog, the mirror and the hive answer") {
  TempDir dir;
  HubFixture hub;
  const auto cache = cache_with_tiny(dir, hub);
  // A catalog entry and the mirror's listing that would block whoever opens them for reading.
  std::filesystem::create_directories(model_dir(cache, "org/fifo"));
  REQUIRE(::mkfifo((model_dir(cache, "org/fifo") / "metadata.yaml").c_str(), 0644) == 0);
  std::filesystem::remove(model_dir(cache, "org/tiny") / ".rbee" / "listing.json");
  REQUIRE(::mkfifo((model_dir(cache, "org/tiny") / ".rbee" / "listing.json").c_str(), 0644) == 0);

  // The start-up scan reads every entry: the hive comes up (HiveProcess waits for /health).
  HiveProcess hive(options_for(cache, hub, fast_flags({"--mirror-pull-through=false"})));
  auto client = hive.client();
  client->set_read_timeout(5s);
  const auto models = client->Get("/v1/models");
  REQUIRE(models);
  CHECK(models->status == 200);
  CHECK(models->body.find("not a regular file") != std::string::npos);
  const auto listed = watch(hive, hive.submit_job({{"operation", "model_list"}}));
  CHECK(listed.terminal() == "[DONE]");
  const auto info = client->Get("/hf/api/models/org/tiny");
  REQUIRE(info);
  CHECK(info->status == 404);
  CHECK(hive.stop(SIGTERM, 10s) == 0);
}

TEST_CASE("a downloaded model holds no descriptor of its files, nor after model_delete") {
  TempDir dir;
  const auto cache = dir / "models";
  HubFixture hub;
  hub.add_repo(tiny_repo("org/tiny"));
  HiveProcess hive(options_for(cache, hub));
  REQUIRE(watch(hive, submit_download(hive, "org/tiny")).terminal() == "[DONE]");
  // Verified files were kept open for a minute (and until another file verified, for ever):
  // a deleted model's disk space was not freed.
  CHECK(descriptors_under(hive, model_dir(cache, "org/tiny")).empty());
  const auto served = hive.client()->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf");
  REQUIRE(served);
  CHECK(served->status == 200);
  CHECK(served->body == hub.content("org/tiny", "model.Q4_K_M.gguf"));
  const auto deleted =
      watch(hive, hive.submit_job({{"operation", "model_delete"}, {"id", "org/tiny"}}));
  REQUIRE(deleted.terminal() == "[DONE]");
  CHECK(descriptors_under(hive, cache).empty());
  CHECK_FALSE(std::filesystem::exists(model_dir(cache, "org/tiny")));
  // And the mirror serves nothing of it: a request pulls it again from the Hub, as new.
  hub.clear_requests();
  const auto again = hive.client()->Get("/hf/org/tiny/resolve/main/model.Q4_K_M.gguf");
  REQUIRE(again);
  CHECK(again->status == 200);
  bool fetched = false;
  for (const auto& request : hub.requests()) {
    fetched |= request.method == "GET" && request.listener == "cdn";
  }
  CHECK(fetched);  // its bytes came from upstream, not from the deleted file's descriptor
}
