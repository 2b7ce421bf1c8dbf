// ChunkIndex: the records of which xorb chunks sit where on disk (DESIGN §15, "Reuse").
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "support/temp_dir.hpp"
#include "xet/chunk_index.hpp"

using namespace rbee::provisioner::xet;
using rbee::catalog::Directory;
using rbee::testing::TempDir;

namespace {

const std::string kXorb(64, 'b');

void write(const std::filesystem::path& file, const std::string& text) {
  std::filesystem::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << text;
}

// weights.bin: chunks 2..5 of kXorb (lengths 10, 20, 30, 40) at offset 0.
std::vector<ChunkSpan> spans() {
  return {{kXorb, {2, 6}, 0, 100, {10, 20, 30, 40}}};
}

}  // namespace

TEST_CASE("a recorded file is found for its chunks and any run inside them, until it changes") {
  TempDir root;
  const auto model_dir = root / "models--acme--m";
  write(model_dir / "weights.bin", std::string(100, 'w'));
  const auto model = Directory::open(model_dir, false);
  {
    const int fd = ::open((model_dir / "weights.bin").c_str(), O_RDONLY);
    ChunkIndex index(root.path());
    CHECK_FALSE(index.record(model, "weights.bin", fd, spans()).has_value());
    ::close(fd);
    const auto whole = index.find(kXorb, {2, 6});
    REQUIRE(whole);
    CHECK(whole->offset == 0);
    CHECK(whole->length == 100);
    const auto inner = index.find(kXorb, {3, 5});  // chunks of 20 and 30 bytes, after 10
    REQUIRE(inner);
    CHECK(inner->offset == 10);
    CHECK(inner->length == 50);
    CHECK(inner->chunk_lengths == std::vector<std::uint32_t>{20, 30});
    CHECK_FALSE(index.find(kXorb, {1, 3}));  // not all of it is here
    CHECK_FALSE(index.find(std::string(64, 'c'), {2, 6}));
  }
  // Another process (a restart) finds the record on disk.
  ChunkIndex reloaded(root.path());
  CHECK(reloaded.find(kXorb, {2, 6}));
  // A file changed since (its mtime) is never a source.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write(model_dir / "weights.bin", std::string(100, 'x'));
  ChunkIndex after_change(root.path());
  CHECK_FALSE(after_change.find(kXorb, {2, 6}));
}

TEST_CASE("a record that names a path outside its model, or lies about lengths, is ignored") {
  TempDir root;
  const auto folder = root / "models--acme--m/.rbee/xet-chunks";
  write(root / "secret", std::string(100, 's'));
  // Whatever the name, the record must be the one of its own path, and the path a repo path.
  write(folder / "0123.json", R"({"version":1,"path":"../secret","size":100,"mtime_ns":0,)"
                              R"("spans":[[")" +
                                  kXorb + R"(",2,6,0,100,[]]]})");
  write(root / "models--acme--m/w.bin", std::string(100, 'w'));
  write(folder / "bad-lengths.json", R"({"version":1,"path":"w.bin","size":100,"mtime_ns":0,)"
                                     R"("spans":[[")" +
                                         kXorb + R"(",2,6,0,100,[1,2,3,4]]]})");
  ChunkIndex index(root.path());
  CHECK_FALSE(index.find(kXorb, {2, 6}));
}
