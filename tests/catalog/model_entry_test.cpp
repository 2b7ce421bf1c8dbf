#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>
#include <rbee/catalog/model_entry.hpp>

using namespace rbee::catalog;

namespace {
ModelEntry sample_entry() {
  ModelEntry entry;
  entry.id = parse_model_id("org/yes");
  entry.endpoint = "https://huggingface.co";
  entry.revision = "0123";
  entry.commit = "on";
  entry.path = "/tmp/models/org/yes";
  entry.status = ModelStatus::downloading;
  entry.bytes_done = 250;
  entry.bytes_total = 1000;
  entry.files = {{"config.json", 12, "", "abc", "verified"},
                 {"model.gguf", 988, "e3b0c442", "", "downloading"}};
  entry.added_at_ms = 1795383181260;
  entry.updated_at_ms = 1795383182001;
  entry.last_job_id = "job-1";
  const std::string c1(40, 'a'), c2(40, 'b');
  entry.refs = {{"main", c1}, {"refs/pr/1", c2}};
  RevisionRecord ready{
      c1,
      ModelStatus::ready,
      12,
      "",
      {{"config.json", 12, "", "abc", "verified", "/tmp/models/models--org--yes/blobs/abc"}},
      1795383181000};
  RevisionRecord failed{c2, ModelStatus::failed, 0, "the Hub said no", {}, 1795383182000};
  entry.revisions = {ready, failed};
  return entry;
}
}  // namespace

TEST_CASE("an entry survives a YAML round trip unchanged") {
  const ModelEntry entry = sample_entry();
  CHECK(parse_model_entry(to_yaml(entry)) == entry);
}

TEST_CASE("schema 2 keeps every revision with its files and blobs, and the refs") {
  const ModelEntry entry = sample_entry();
  const ModelEntry read = parse_model_entry(to_yaml(entry));
  REQUIRE(read.revisions.size() == 2);
  CHECK(read.refs.at("refs/pr/1") == std::string(40, 'b'));
  const auto* ready = read.find_revision(std::string(40, 'a'));
  REQUIRE(ready);
  CHECK(ready->status == ModelStatus::ready);
  CHECK(ready->files.at(0).blob == "/tmp/models/models--org--yes/blobs/abc");
  CHECK(read.find_revision(std::string(40, 'b'))->error == "the Hub said no");
  // Any YAML reader sees the same tree (PyYAML, a worker in another language).
  const YAML::Node node = YAML::Load(to_yaml(entry));
  CHECK(node["revisions"][0]["files"][0]["blob"].as<std::string>() ==
        "/tmp/models/models--org--yes/blobs/abc");
  CHECK(node["refs"]["main"].as<std::string>() == std::string(40, 'a'));
}

TEST_CASE("a ref naming no commit, or a revision of another shape, is refused") {
  std::string yaml = to_yaml(sample_entry());
  std::string bad_ref = yaml;
  bad_ref.replace(bad_ref.find(std::string(40, 'b')), 40, "not-a-commit");
  CHECK_THROWS(parse_model_entry(bad_ref));
  std::string bad_revision = yaml;
  bad_revision.replace(bad_revision.find("revisions:"), 10, "revisions: 3\nx:");
  CHECK_THROWS(parse_model_entry(bad_revision));
}

TEST_CASE("a schema-1 entry is read only when asked for (the migration)") {
  ModelEntry old = sample_entry();
  std::string yaml = to_yaml(old);
  yaml.replace(yaml.find("schema: 2"), 9, "schema: 1");
  CHECK_THROWS_WITH(parse_model_entry(yaml), doctest::Contains("schema 1"));
  const ModelEntry read = parse_model_entry(yaml, true);
  CHECK(read.files.size() == 2);
  CHECK(read.revisions.empty());
  CHECK(read.files[0].blob.empty());
}

TEST_CASE("strings that other YAML readers would retype are double-quoted") {
  const std::string yaml = to_yaml(sample_entry());
  CHECK(yaml.find("revision: \"0123\"") != std::string::npos);
  CHECK(yaml.find("commit: \"on\"") != std::string::npos);
  CHECK(yaml.find("id: \"org/yes\"") != std::string::npos);
  CHECK(yaml.find("schema: 2") != std::string::npos);
  CHECK(yaml.find("progress: 0.25") != std::string::npos);
}

TEST_CASE("a truncated document is refused, not read as a shorter entry") {
  const std::string yaml = to_yaml(sample_entry());
  // Every cut before the last field must fail: that is what makes a torn file detectable.
  const auto last_field = yaml.find("last_job_id");
  for (std::size_t cut = 0; cut < last_field; cut += 7) {
    CAPTURE(cut);
    CHECK_THROWS(parse_model_entry(yaml.substr(0, cut)));
  }
}

TEST_CASE("an unknown schema version or status is refused with the reason") {
  std::string yaml = to_yaml(sample_entry());
  std::string newer = yaml;
  newer.replace(newer.find("schema: 2"), 9, "schema: 3");
  CHECK_THROWS_WITH(parse_model_entry(newer), doctest::Contains("schema 3"));
  std::string odd = yaml;
  odd.replace(odd.find("\"downloading\"\nbytes_done"), 13, "\"exploded\"");
  CHECK_THROWS_WITH(parse_model_entry(odd), doctest::Contains("exploded"));
}

TEST_CASE("a hostile file path inside metadata is refused") {
  ModelEntry entry = sample_entry();
  std::string yaml = to_yaml(entry);
  yaml.replace(yaml.find("\"config.json\""), 13, "\"../../x\"");
  CHECK_THROWS(parse_model_entry(yaml));
}

TEST_CASE("progress is done/total, and 1 when ready") {
  ModelEntry entry = sample_entry();
  CHECK(entry.progress() == doctest::Approx(0.25));
  entry.status = ModelStatus::ready;
  CHECK(entry.progress() == 1.0);
  entry.status = ModelStatus::downloading;
  entry.bytes_total = 0;
  CHECK(entry.progress() == 0.0);
}
