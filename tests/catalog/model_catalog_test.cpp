#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <rbee/catalog/directory.hpp>
#include <rbee/catalog/file_lock.hpp>
#include <rbee/catalog/model_catalog.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "support/temp_dir.hpp"

using namespace rbee::catalog;
using rbee::testing::read_text;
using rbee::testing::TempDir;
using rbee::testing::write_text;
using namespace std::chrono_literals;

namespace {
ModelEntry ready_entry(const std::string& id) {
  ModelEntry entry;
  entry.id = parse_model_id(id);
  entry.endpoint = "https://huggingface.co";
  entry.commit = "abc123";
  entry.status = ModelStatus::ready;
  entry.bytes_done = entry.bytes_total = 3;
  entry.files = {{"a.bin", 3, "", "sha1", "verified"}};
  entry.last_job_id = "job-1";
  return entry;
}
}  // namespace

TEST_CASE("put then get and list return the entry, stored as models--org--name/metadata.yaml") {
  TempDir root;
  ModelCatalog catalog(root.path());
  catalog.put(ready_entry("org/b"));
  catalog.put(ready_entry("org/a"));
  catalog.put(ready_entry("other/c"));

  CHECK(std::filesystem::exists(root / "models--org--a/metadata.yaml"));
  const auto entry = catalog.get(parse_model_id("org/a"));
  REQUIRE(entry);
  CHECK(entry->status == ModelStatus::ready);
  CHECK(entry->path == (root / "models--org--a/snapshots/abc123").string());
  CHECK(entry->added_at_ms > 0);
  CHECK(entry->updated_at_ms >= entry->added_at_ms);

  const auto all = catalog.list();
  REQUIRE(all.size() == 3);
  CHECK(all[0].id.str() == "org/a");
  CHECK(all[2].id.str() == "other/c");
  CHECK_FALSE(catalog.get(parse_model_id("org/missing")));
}

TEST_CASE("a corrupted or truncated metadata.yaml shows the model as failed with the reason") {
  TempDir root;
  ModelCatalog catalog(root.path());
  catalog.put(ready_entry("org/good"));
  catalog.put(ready_entry("org/cut"));
  const auto cut_file = root / "models--org--cut/metadata.yaml";
  const std::string text = read_text(cut_file);
  write_text(cut_file, text.substr(0, text.size() / 2));
  write_text(root / "models--org--garbage/metadata.yaml", "{{{{ not: yaml");

  const auto all = catalog.list();
  REQUIRE(all.size() == 3);
  for (const auto& entry : all) {
    CAPTURE(entry.id.str());
    if (entry.id.name == "good") {
      CHECK(entry.status == ModelStatus::ready);
    } else {
      CHECK(entry.status == ModelStatus::failed);
      CHECK(entry.error.find("metadata.yaml is unreadable") != std::string::npos);
    }
  }
}

TEST_CASE("an entry naming another model than its folder is refused") {
  TempDir root;
  ModelCatalog catalog(root.path());
  catalog.put(ready_entry("org/a"));
  std::filesystem::create_directories(root / "models--org--b");
  std::filesystem::copy_file(root / "models--org--a/metadata.yaml",
                             root / "models--org--b/metadata.yaml");
  const auto entry = catalog.get(parse_model_id("org/b"));
  REQUIRE(entry);
  CHECK(entry->status == ModelStatus::failed);
  CHECK(entry->error.find("org/a") != std::string::npos);
}

TEST_CASE("folders that are not model ids are not listed") {
  TempDir root;
  ModelCatalog catalog(root.path());
  write_text(root / "models--org--bad..name/metadata.yaml", "x");
  write_text(root / "loose-file", "x");
  CHECK(catalog.list().empty());
}

TEST_CASE("update applies a change under the lock, progress writes are throttled") {
  TempDir root;
  ModelCatalog catalog(root.path(), 1h);
  const ModelId id = parse_model_id("org/m");
  CHECK_FALSE(catalog.update_progress(id, 10, 100));  // never creates an entry (a deleted model)
  CHECK_FALSE(catalog.get(id));
  catalog.update(id, [](ModelEntry&) {});
  CHECK(catalog.update_progress(id, 10, 100));        // the first write always happens
  CHECK_FALSE(catalog.update_progress(id, 20, 100));  // within the interval: skipped
  CHECK(catalog.get(id)->bytes_done == 10);
  CHECK(catalog.update_progress(id, 100, 100));  // completion is never skipped
  const auto entry = catalog.get(id);
  CHECK(entry->status == ModelStatus::downloading);
  CHECK(entry->bytes_done == 100);
  CHECK(entry->progress() == 1.0);

  catalog.update(id, [](ModelEntry& e) { e.status = ModelStatus::ready; });
  CHECK(catalog.get(id)->status == ModelStatus::ready);
  CHECK(catalog.get(id)->bytes_done == 100);
}

TEST_CASE("remove deletes the model folder and its entry, and leaves no temp files behind") {
  TempDir root;
  ModelCatalog catalog(root.path());
  catalog.put(ready_entry("org/a"));
  write_text(root / "models--org--a/a.bin", "abc");
  for (int i = 0; i < 5; ++i) catalog.update(parse_model_id("org/a"), [](ModelEntry&) {});
  int files = 0;
  for (auto& f : std::filesystem::directory_iterator(root / "models--org--a"))
    files += f.is_regular_file();
  CHECK(files == 2);  // metadata.yaml and a.bin: no .tmp files

  CHECK(catalog.remove(parse_model_id("org/a")));
  CHECK_FALSE(std::filesystem::exists(root / "models--org--a"));
  CHECK_FALSE(catalog.get(parse_model_id("org/a")));
  CHECK_FALSE(catalog.remove(parse_model_id("org/a")));
}

TEST_CASE("a reader in a tight loop never sees a torn file while another process writes") {
  TempDir root;
  ModelCatalog catalog(root.path(), 0ms);
  const ModelId id = parse_model_id("org/live");
  catalog.put(ready_entry("org/live"));

  // The writer is another process, as a worker reading while the hive writes would be.
  const pid_t writer = ::fork();
  if (writer == 0) {
    ModelCatalog writer_catalog(root.path(), 0ms);
    for (std::uint64_t i = 1; i <= 400; ++i) writer_catalog.update_progress(id, i, 400);
    ::_exit(0);
  }
  int reads = 0;
  int bad = 0;
  int status = 0;
  while (::waitpid(writer, &status, WNOHANG) == 0) {
    const auto entry = catalog.get(id);
    ++reads;
    if (!entry || entry->status == ModelStatus::failed) ++bad;
  }
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(reads > 0);
  CHECK(bad == 0);
  CHECK(catalog.get(id)->bytes_done == 400);
}

TEST_CASE("a write the disk refuses is reported as io_error and the old entry stays") {
  TempDir root;
  ModelCatalog catalog(root.path());
  catalog.put(ready_entry("org/a"));
  // A file where a folder must go fails the write as a full or read-only disk would, and does
  // so whatever user runs the test (root ignores permissions).
  write_text(root / "models--other--b", "a file where the model folder should be");
  try {
    catalog.put(ready_entry("other/b"));
    FAIL("write succeeded");
  } catch (const CatalogError& error) {
    CHECK(error.code() == CatalogErrorCode::io_error);
    CHECK(std::string(error.what()).find("other") != std::string::npos);
  }
  CHECK(catalog.get(parse_model_id("org/a"))->status == ModelStatus::ready);
}

TEST_CASE("a symlinked model folder is refused: nothing is written or read through it") {
  TempDir root, outside;
  ModelCatalog catalog(root.path());
  std::filesystem::create_symlink(outside.path(), root / "models--org--m");
  const ModelId id = parse_model_id("org/m");
  CHECK_THROWS_AS(catalog.update(id, [](ModelEntry&) {}), CatalogError);
  CHECK(std::filesystem::is_empty(outside.path()));
  const auto entry = catalog.get(id);
  REQUIRE(entry);
  CHECK(entry->status == ModelStatus::failed);
  CHECK(entry->error.find("symlink") != std::string::npos);
}

TEST_CASE("the download lock of org/x is not the catalog lock of org/x.download") {
  TempDir root;
  ModelCatalog catalog(root.path());
  FileLock download(catalog.download_lock_path(parse_model_id("org/x")));
  std::stop_source give_up;
  std::jthread timer([&](std::stop_token done) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait_for(lock, done, std::chrono::seconds(5), [] { return false; });
    give_up.request_stop();
  });
  CHECK_NOTHROW(catalog.update(
      parse_model_id("org/x.download"), [](ModelEntry&) {}, give_up.get_token()));
}

TEST_CASE("remove marks the entry deleting before the files go, and the entry goes last") {
  TempDir root;
  ModelCatalog catalog(root.path());
  const ModelId id = parse_model_id("org/m");
  catalog.update(id, [](ModelEntry& e) { e.status = ModelStatus::ready; });
  write_text(root / "models--org--m/a.bin", "x");
  // A folder that cannot be emptied stops the delete half way, as a crash would.
  std::filesystem::create_directories(root / "models--org--m/locked/inner");
  std::filesystem::permissions(
      root / "models--org--m/locked",
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  const bool root_user = ::geteuid() == 0;  // root ignores permissions: nothing stops it
  if (!root_user) {
    CHECK_THROWS(catalog.remove(id));
    CHECK(catalog.get(id)->status == ModelStatus::deleting);
    std::filesystem::permissions(root / "models--org--m/locked", std::filesystem::perms::owner_all);
  }
  CHECK(catalog.remove(id));
  CHECK_FALSE(catalog.get(id));
  CHECK_FALSE(std::filesystem::exists(root / "models--org--m"));
}

TEST_CASE("temp files a killed writer left are removed at start, live documents are not") {
  TempDir root;
  ModelCatalog catalog(root.path());
  const ModelId id = parse_model_id("org/m");
  catalog.update(id, [](ModelEntry& e) { e.status = ModelStatus::ready; });
  write_text(root / "models--org--m/.rbee/metadata.yaml.4242.0.tmp", "half a document");
  CHECK(catalog.remove_stale_temp_files() == 1);
  CHECK_FALSE(std::filesystem::exists(root / "models--org--m/.rbee/metadata.yaml.4242.0.tmp"));
  CHECK(catalog.get(id)->status == ModelStatus::ready);
}

TEST_CASE("a FIFO where the catalog expects a file is refused at once, never waited on") {
  TempDir root;
  ModelCatalog catalog(root.path());
  catalog.put(ready_entry("org/a"));
  std::filesystem::create_directories(root.path() / "models--org--fifo");
  REQUIRE(::mkfifo((root.path() / "models--org--fifo" / "metadata.yaml").c_str(), 0644) == 0);

  // Each of these opened the FIFO for reading and waited for a writer that never came.
  const auto listed = catalog.list();
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].status == ModelStatus::ready);
  CHECK(listed[1].status == ModelStatus::failed);
  CHECK(listed[1].error.find("not a regular file") != std::string::npos);
  const auto dir = catalog.open_model_dir(parse_model_id("org/fifo"), false);
  REQUIRE(dir);
  CHECK_THROWS_AS(dir->read_file("metadata.yaml", 1024), FileSystemError);
  CHECK_THROWS_AS(dir->open_file("metadata.yaml", O_RDONLY), FileSystemError);
  // A regular file opened by the same call reads as before (O_NONBLOCK was cleared).
  const auto fd =
      catalog.open_model_dir(parse_model_id("org/a"), false)->open_file("metadata.yaml", O_RDONLY);
  REQUIRE(fd);
  CHECK((::fcntl(fd.get(), F_GETFL) & O_NONBLOCK) == 0);
}

TEST_CASE("remove_tree works through descriptors: a folder swapped for a symlink aims it nowhere") {
  TempDir root;
  std::filesystem::create_directories(root.path() / "cache" / "model" / "sub");
  write_text(root.path() / "cache" / "model" / "sub" / "a.bin", "ours");
  std::filesystem::create_directories(root.path() / "victim" / "sub");
  write_text(root.path() / "victim" / "sub" / "precious", "theirs");
  const auto model = Directory::open(root.path() / "cache", false).descend("model", false);
  REQUIRE(model);
  // Another user of the shared cache moves the folder away and leaves a symlink in its place
  // between the hive's open and its delete.
  std::filesystem::rename(root.path() / "cache" / "model", root.path() / "cache" / "moved");
  std::filesystem::create_directory_symlink(root.path() / "victim",
                                            root.path() / "cache" / "model");

  for (const auto& name : model->entry_names()) model->remove_tree(name);
  CHECK(read_text(root.path() / "victim" / "sub" / "precious") == "theirs");
  CHECK(std::filesystem::is_empty(root.path() / "cache" / "moved"));  // the folder it opened

  SUBCASE("a symlink inside is removed itself, its target untouched") {
    const auto cache = Directory::open(root.path() / "cache", false);
    CHECK(cache.remove_tree("model"));
    CHECK_FALSE(
        std::filesystem::exists(std::filesystem::symlink_status(root.path() / "cache" / "model")));
    CHECK(read_text(root.path() / "victim" / "sub" / "precious") == "theirs");
  }
}
