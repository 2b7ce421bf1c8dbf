#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <rbee/provisioner/live_files.hpp>
#include <rbee/provisioner/repo_snapshot.hpp>

#include "support/temp_dir.hpp"

using namespace rbee;
using provisioner::LiveFile;
using provisioner::LiveFiles;
using namespace std::chrono_literals;

namespace {

catalog::UniqueFd part_in(const rbee::testing::TempDir& dir, const char* name) {
  return catalog::UniqueFd(::open((dir / name).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
}

}  // namespace

TEST_CASE("LiveFiles: readers get the committed prefix but the last byte until it verifies") {
  rbee::testing::TempDir dir;
  const auto part = part_in(dir, "a.part");
  LiveFiles files;
  const provisioner::LiveFileKey key{"org/m", "c0ffee", "model.gguf"};
  CHECK_FALSE(files.find(key));
  files.committed(key, 100, part.get(), 40);
  const auto live = files.find(key);
  REQUIRE(live);
  CHECK(live->wait_readable(0, 0ms).readable == 40);
  CHECK(live->wait_readable(40, 0ms).readable == 0);  // nothing readable at 40 yet
  files.committed(key, 100, part.get(), 100);
  CHECK(live->wait_readable(50, 0ms).readable == 99);  // never the last byte before it verifies
  files.verified(key);
  CHECK(live->wait_readable(99, 0ms).readable == 100);
  CHECK(live->progress().state == LiveFile::State::verified);
}

TEST_CASE("LiveFiles: a ranged download's ranges are readable where they are on disk") {
  rbee::testing::TempDir dir;
  const auto part = part_in(dir, "a.part");
  LiveFiles files;
  const provisioner::LiveFileKey key{"org/m", "c0ffee", "model.gguf"};
  files.ranges_written(key, 1000, part.get(), {{0, 100}, {500, 700}, {900, 1000}});
  files.committed(key, 1000, part.get(), 100);
  const auto live = files.find(key);
  REQUIRE(live);
  CHECK(live->wait_readable(10, 0ms).readable == 100);
  CHECK(live->wait_readable(550, 0ms).readable == 700);
  CHECK(live->wait_readable(300, 0ms).readable == 0);
  CHECK(live->wait_readable(950, 0ms).readable == 999);
}

TEST_CASE("LiveFiles: a restart or a failure abandons what readers hold") {
  rbee::testing::TempDir dir;
  const auto first = part_in(dir, "a.part");
  const auto second = part_in(dir, "b.part");
  LiveFiles files;
  const provisioner::LiveFileKey key{"org/m", "c0ffee", "model.gguf"};
  files.committed(key, 100, first.get(), 60);
  const auto old = files.find(key);
  files.committed(key, 100, first.get(), 10);  // the prefix went back: started over
  CHECK(old->progress().state == LiveFile::State::abandoned);
  const auto restarted = files.find(key);
  REQUIRE(restarted);
  CHECK(restarted != old);
  files.committed(key, 100, second.get(), 20);  // another part file: started over too
  CHECK(restarted->progress().state == LiveFile::State::abandoned);
  const auto last = files.find(key);
  files.abandoned(key, "sha256 mismatch");
  CHECK(last->wait_readable(0, 0ms).state == LiveFile::State::abandoned);
  CHECK(last->progress().reason == "sha256 mismatch");
  CHECK_FALSE(files.find(key));
}

TEST_CASE("RepoSnapshot: revisions of one commit accumulate; another commit replaces them") {
  rbee::testing::TempDir dir;
  const auto model = catalog::Directory::open(dir / "org" / "m", true);
  provisioner::RepoInfo listing;
  listing.commit = std::string(40, 'a');
  listing.gated = true;
  listing.siblings = {{"config.json", 10, std::string(40, 'b'), ""},
                      {"w.bin", 20, std::string(40, 'c'), std::string(64, 'd')}};
  const provisioner::ListingLimits limits;
  CHECK_FALSE(provisioner::load_repo_snapshot(model, limits));
  provisioner::record_repo_snapshot(model, listing, "main", limits);
  provisioner::record_repo_snapshot(model, listing, "v1.0", limits);
  auto snapshot = provisioner::load_repo_snapshot(model, limits);
  REQUIRE(snapshot);
  CHECK(snapshot->revisions == std::vector<std::string>{"main", "v1.0"});
  CHECK(snapshot->listing.gated);
  CHECK(snapshot->listing.siblings.size() == 2);
  CHECK(snapshot->listing.siblings[1].lfs_sha256 == std::string(64, 'd'));
  listing.commit = std::string(40, 'e');
  provisioner::record_repo_snapshot(model, listing, "main", limits);
  snapshot = provisioner::load_repo_snapshot(model, limits);
  REQUIRE(snapshot);
  CHECK(snapshot->listing.commit == std::string(40, 'e'));
  CHECK(snapshot->revisions == std::vector<std::string>{"main"});
}

TEST_CASE("LiveFiles: verified files stay findable for a while, a bounded number of them") {
  rbee::testing::TempDir dir;
  const auto part = part_in(dir, "a.part");
  LiveFiles files;
  for (int i = 0; i < 300; ++i) {
    const provisioner::LiveFileKey key{"org/m", "c0ffee", "f" + std::to_string(i)};
    files.committed(key, 10, part.get(), 10);
    files.verified(key);
  }
  CHECK_FALSE(files.find({"org/m", "c0ffee", "f0"}));  // each held a descriptor: dropped
  CHECK(files.find({"org/m", "c0ffee", "f299"}));
  CHECK(files.find({"org/m", "c0ffee", "f299"})->progress().state == LiveFile::State::verified);
}

TEST_CASE(
    "LiveFiles: verified files are closed once the catalog has them, a deleted model's at once") {
  rbee::testing::TempDir dir;
  const auto part_a = part_in(dir, "a.part");
  const auto part_b = part_in(dir, "b.part");
  const auto part_c = part_in(dir, "c.part");
  LiveFiles files;
  const provisioner::LiveFileKey a{"org/m", "c0ffee", "a.gguf"}, b{"org/m", "c0ffee", "b.gguf"},
      other{"org/other", "c0ffee", "a.gguf"};
  files.committed(a, 10, part_a.get(), 10);
  files.verified(a);
  files.committed(other, 10, part_c.get(), 10);
  files.verified(other);
  files.committed(b, 10, part_b.get(), 4);
  REQUIRE(files.size() == 3);

  SUBCASE("the catalog records the model's files: its verified ones go, the growing one stays") {
    files.forget_verified("org/m");
    CHECK_FALSE(files.find(a));
    CHECK(files.find(b));
    CHECK(files.find(other));  // another model's are its own job's to forget
    CHECK(files.size() == 2);
  }
  SUBCASE("the model is deleted: every file of it goes, a reader of the growing one is cut off") {
    const auto reader = files.find(b);
    REQUIRE(reader);
    files.forget_model("org/m");
    CHECK_FALSE(files.find(a));
    CHECK_FALSE(files.find(b));
    CHECK(reader->progress().state == LiveFile::State::abandoned);
    CHECK(files.size() == 1);
  }
}
