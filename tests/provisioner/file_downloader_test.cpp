#include <doctest/doctest.h>
#include <rbee/provisioner/file_downloader.hpp>

#include <thread>

#include "hub_fixture/hub_fixture.hpp"
#include "staging.hpp"
#include "support/temp_dir.hpp"

using namespace rbee::provisioner;
using namespace rbee::testing;
using namespace std::chrono_literals;
using rbee::catalog::parse_model_id;

namespace {

constexpr std::uint64_t kSize = 3 * 1024 * 1024 + 17;  // several write batches, odd length

struct Setup {
  HubFixture hub;
  TempDir dir;
  HubClient client;
  DownloadPolicy policy;
  std::vector<std::string> retries;

  Setup() : client(settings(hub)) {
    FixtureRepo repo;
    repo.id = "org/m";
    repo.files = {{"big.gguf", kSize, true, 7},
                  {"small.json", 1000, false, 8},
                  {"sub/nested.json", 500, false, 9}};
    hub.add_repo(repo);
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
    if (path == "big.gguf") return {path, content.size(), sha256_hex(content), ""};
    auto info = client.model_info(parse_model_id("org/m"), "main");
    for (const auto& s : info.siblings) {
      if (s.path == path) return {path, s.size, "", s.blob_id};
    }
    FAIL("no such file");
    return {};
  }
  void fetch(const std::string& path, std::stop_token stop = {}) {
    DownloadEvents events;
    events.retrying = [this](int, const std::string& reason, std::chrono::milliseconds) {
      retries.push_back(reason);
    };
    FileDownloader(client, policy)
        .fetch(parse_model_id("org/m"), "main", file(path),
               rbee::catalog::Directory::open(dir.path(), true), stop, events);
  }
  // Where the working part of `path` lives (in the model's .rbee/ folder).
  std::filesystem::path part(const std::string& path) {
    std::filesystem::create_directories(dir / ".rbee");
    return dir / ".rbee" / part_file_name(file(path));
  }
  // Where the verified file of `path` is published: its blob (stored_path).
  std::filesystem::path published(const std::string& path) { return dir / stored_path(file(path)); }
  rbee::catalog::Directory model() const {
    return rbee::catalog::Directory::open(dir.path(), true);
  }
  std::vector<RecordedRequest> content_requests(const std::string& listener) {
    std::vector<RecordedRequest> result;
    for (auto& r : hub.requests()) {
      if (r.listener == listener && r.method == "GET" && r.path.find("/api/") != 0)
        result.push_back(r);
    }
    return result;
  }
};

}  // namespace

TEST_CASE("an LFS and a regular file arrive byte-exact, verified, with no part left") {
  Setup s;
  s.fetch("big.gguf");
  s.fetch("small.json");
  CHECK(read_text(s.published("big.gguf")) == s.hub.content("org/m", "big.gguf"));
  CHECK(read_text(s.published("small.json")) == s.hub.content("org/m", "small.json"));
  CHECK_FALSE(std::filesystem::exists(s.part("big.gguf")));
  CHECK(std::filesystem::is_empty(s.dir / ".rbee"));
  CHECK(s.retries.empty());
}

TEST_CASE("a dropped connection resumes with a Range request from where it stopped") {
  Setup s;
  s.hub.set_faults("big.gguf", Faults{.times = 1, .drop_after_bytes = 1024 * 1024});
  s.fetch("big.gguf");
  CHECK(read_text(s.published("big.gguf")) == s.hub.content("org/m", "big.gguf"));
  const auto gets = s.content_requests("cdn");
  REQUIRE(gets.size() == 2);
  CHECK(gets[0].range.empty());
  CHECK(gets[1].range == "bytes=1048576-");
}

TEST_CASE("an existing part file is rehashed and resumed, not fetched again") {
  Setup s;
  const std::string content = s.hub.content("org/m", "big.gguf");
  write_text(s.part("big.gguf"), content.substr(0, 2'000'000));
  s.fetch("big.gguf");
  CHECK(read_text(s.published("big.gguf")) == content);
  const auto gets = s.content_requests("cdn");
  REQUIRE(gets.size() == 1);
  CHECK(gets[0].range == "bytes=2000000-");
}

TEST_CASE("a part longer than the file is discarded and the file fetched whole") {
  Setup s;
  write_text(s.part("small.json"), std::string(5000, 'x'));
  s.fetch("small.json");
  CHECK(read_text(s.published("small.json")) == s.hub.content("org/m", "small.json"));
}

TEST_CASE("a corrupted byte fails the hash, the part is dropped and the file fetched again") {
  Setup s;
  s.hub.set_faults("big.gguf", Faults{.times = 1, .corrupt_at = 12345});
  s.fetch("big.gguf");
  CHECK(read_text(s.published("big.gguf")) == s.hub.content("org/m", "big.gguf"));
  REQUIRE(s.retries.size() == 1);
  CHECK(s.retries[0].find("sha256 mismatch") != std::string::npos);
}

TEST_CASE("corruption twice in a row fails the file with both hashes and keeps nothing") {
  Setup s;
  s.hub.set_faults("big.gguf", Faults{.times = 2, .corrupt_at = 99});
  try {
    s.fetch("big.gguf");
    FAIL("a corrupted file was accepted");
  } catch (const DownloadError& error) {
    CHECK(error.kind() == DownloadErrorKind::hash_mismatch);
    const std::string message = error.what();
    CHECK(message.find(sha256_hex(s.hub.content("org/m", "big.gguf"))) != std::string::npos);
    CHECK(message.find("got ") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(s.published("big.gguf")));
}

TEST_CASE("5xx and 429 answers are retried, honouring Retry-After") {
  Setup s;
  s.hub.set_faults("small.json", Faults{.times = 2, .error_status = 503, .retry_after_s = 0});
  s.fetch("small.json");
  CHECK(read_text(s.published("small.json")) == s.hub.content("org/m", "small.json"));
  CHECK(s.retries.size() == 2);

  std::chrono::milliseconds reported{0};
  s.hub.set_faults("big.gguf", Faults{.times = 1, .error_status = 429, .retry_after_s = 1});
  DownloadEvents events;
  events.retrying = [&](int, const std::string&, std::chrono::milliseconds delay) {
    reported = delay;
  };
  FileDownloader(s.client, s.policy)
      .fetch(parse_model_id("org/m"), "main", s.file("big.gguf"), s.model(), {}, events);
  CHECK(reported >= 1000ms);  // the server's Retry-After, not the 1 ms backoff
}

TEST_CASE("attempts without progress are bounded") {
  Setup s;
  s.policy.max_attempts = 3;
  s.hub.set_faults("small.json", Faults{.times = 10, .error_status = 500});
  CHECK_THROWS_AS(s.fetch("small.json"), DownloadError);
  CHECK(s.content_requests("hub").size() == 3);
}

TEST_CASE("a 404 is not retried") {
  Setup s;
  FileToFetch missing{"absent.bin", 10, "", "0000000000000000000000000000000000000000"};
  CHECK_THROWS_AS(FileDownloader(s.client, s.policy)
                      .fetch(parse_model_id("org/m"), "main", missing, s.model(), {}, {}),
                  HubError);
}

TEST_CASE("a server that ignores Range answers 200: the part restarts from zero, still exact") {
  Setup s;
  const std::string content = s.hub.content("org/m", "big.gguf");
  write_text(s.part("big.gguf"), content.substr(0, 1'000'000));
  s.hub.set_faults("big.gguf", Faults{.times = 1, .ignore_range = true});
  s.fetch("big.gguf");
  CHECK(read_text(s.published("big.gguf")) == content);
}

TEST_CASE("a stalled connection is dropped and the download resumes") {
  Setup s;
  s.hub.set_faults("big.gguf", Faults{.times = 1, .stall_after_bytes = 500'000});
  s.fetch("big.gguf");
  CHECK(read_text(s.published("big.gguf")) == s.hub.content("org/m", "big.gguf"));
  const auto gets = s.content_requests("cdn");
  REQUIRE(gets.size() == 2);
  CHECK(gets[1].range == "bytes=500000-");
}

TEST_CASE("an expired signed URL is re-resolved and the download goes on") {
  Setup s;
  s.hub.set_faults("big.gguf", Faults{.times = 1, .expire_signed_url = true});
  s.fetch("big.gguf");
  CHECK(read_text(s.published("big.gguf")) == s.hub.content("org/m", "big.gguf"));
  int resolves = 0;
  for (auto& r : s.hub.requests()) resolves += r.listener == "hub" && r.method == "HEAD";
  CHECK(resolves == 2);
}

TEST_CASE("cancellation stops a stalled download at once and keeps the part for resume") {
  Setup s;
  s.policy.stall_timeout = 60s;
  s.hub.set_faults("big.gguf", Faults{.times = 1, .stall_after_bytes = 1'100'000});
  std::stop_source stop;
  const auto part = s.part("big.gguf");
  std::thread canceller([&] {
    while (!std::filesystem::exists(part) || std::filesystem::file_size(part) < 1'000'000) {
      std::this_thread::sleep_for(5ms);
    }
    stop.request_stop();
  });
  CHECK_THROWS_AS(s.fetch("big.gguf", stop.get_token()), DownloadCancelled);
  canceller.join();
  CHECK(std::filesystem::file_size(part) >= 1'000'000);
}

TEST_CASE("a regular file is one GET; redirected (a renamed repo), it is resolved and fetched") {
  Setup s;
  s.fetch("small.json");
  std::size_t heads = 0;
  for (const auto& r : s.hub.requests()) heads += r.method == "HEAD" ? 1 : 0;
  CHECK(heads == 0);
  CHECK(s.content_requests("hub").size() == 1);

  FixtureRepo renamed;
  renamed.id = "neworg/m";
  renamed.renamed_from = "oldorg/m";
  renamed.files = {{"small.json", 1000, false, 8}};
  s.hub.add_repo(renamed);
  const std::string content = s.hub.content("neworg/m", "small.json");
  const FileToFetch file{"small.json", content.size(), "", s.file("small.json").git_sha1};
  FileDownloader(s.client, s.policy)
      .fetch(parse_model_id("oldorg/m"), "main", file,
             rbee::catalog::Directory::open(s.dir / "old", true), {}, {});
  CHECK(read_text(s.dir / "old" / stored_path(file)) == content);
  CHECK(s.retries.empty());  // a redirect is not a failure
}

// The cache may be shared with other users (DESIGN §12): a symlink is never followed, whoever
// planted it, and what is published is the file that was verified.

TEST_CASE("a symlink planted at the part is refused and its target is never touched") {
  Setup s;
  TempDir outside;
  write_text(outside / "precious", "keep me");
  std::filesystem::create_symlink(outside / "precious", s.part("small.json"));
  try {
    s.fetch("small.json");
    FAIL("a symlinked part was followed");
  } catch (const DownloadError& error) {
    CHECK(error.kind() == DownloadErrorKind::disk);
    CHECK(std::string(error.what()).find("symlink") != std::string::npos);
  }
  CHECK(read_text(outside / "precious") == "keep me");
  CHECK_FALSE(std::filesystem::exists(s.published("small.json")));
}

TEST_CASE("a symlink at the file's blob is replaced by the verified file, its target untouched") {
  Setup s;
  TempDir outside;
  write_text(outside / "precious", "keep me");
  std::filesystem::create_directories(s.dir / "blobs");
  std::filesystem::create_symlink(outside / "precious", s.published("small.json"));
  s.fetch("small.json");
  CHECK_FALSE(std::filesystem::is_symlink(s.published("small.json")));
  CHECK(read_text(s.published("small.json")) == s.hub.content("org/m", "small.json"));
  CHECK(read_text(outside / "precious") == "keep me");
}

TEST_CASE("a symlinked folder on the way to a file is refused, nothing is written through it") {
  Setup s;
  TempDir outside;
  std::filesystem::create_symlink(outside.path(), s.dir / "blobs");
  CHECK_THROWS_AS(s.fetch("sub/nested.json"), DownloadError);
  CHECK(std::filesystem::is_empty(outside.path()));
}

TEST_CASE("a part swapped during the download is never published") {
  Setup s;
  s.hub.set_faults("big.gguf", Faults{.times = 1, .stall_after_bytes = 1'100'000});
  const auto part = s.part("big.gguf");
  std::jthread swapper([&] {
    while (!std::filesystem::exists(part) || std::filesystem::file_size(part) < 1'000'000) {
      std::this_thread::sleep_for(5ms);
    }
    // While the connection stalls, someone renames their own file over the part.
    write_text(s.dir / "forged", std::string(kSize, 'F'));
    std::filesystem::rename(s.dir / "forged", part);
  });
  try {
    s.fetch("big.gguf");
    FAIL("a swapped part was published");
  } catch (const DownloadError& error) {
    CHECK(error.kind() == DownloadErrorKind::disk);
    CHECK(std::string(error.what()).find("replaced") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(s.published("big.gguf")));
  // The next attempt does not trust the forged part either: it fails the hash and starts over.
  s.fetch("big.gguf");
  CHECK(read_text(s.published("big.gguf")) == s.hub.content("org/m", "big.gguf"));
}
