#include <doctest/doctest.h>

#include <rbee/catalog/model_catalog.hpp>

#include "repo_views.hpp"
#include "support/temp_dir.hpp"

using namespace rbee;

namespace {

catalog::ModelEntry entry_with(const std::string& commit, std::vector<catalog::ModelFile> files) {
  catalog::ModelEntry entry;
  entry.id = catalog::parse_model_id("org/m");
  entry.endpoint = "https://huggingface.co";
  entry.revision = "main";
  entry.commit = commit;
  entry.status = catalog::ModelStatus::ready;
  entry.files = std::move(files);
  return entry;
}

}  // namespace

TEST_CASE("RepoViews: the verified files are parsed once per change of metadata.yaml") {
  // A resolve asked for them on every request, and a waiting one every 50 ms: a 20 MiB entry
  // parsed again each time.
  rbee::testing::TempDir root;
  catalog::ModelCatalog catalog(root.path());
  mirror::RepoViews views(catalog, provisioner::ListingLimits{});
  const auto id = catalog::parse_model_id("org/m");
  CHECK_FALSE(views.verified_files(id));

  catalog.put(entry_with(
      "c1", {{"a.bin", 3, "", "sha1a", "verified"}, {"b.bin", 5, "", "sha1b", "pending"}}));
  const auto first = views.verified_files(id);
  REQUIRE(first);
  REQUIRE(first->find("c1", "a.bin"));
  CHECK(first->find("c1", "a.bin")->size == 3);
  CHECK(first->find("c1", "a.bin")->blob == "sha1a");
  CHECK_FALSE(first->find("c1", "b.bin"));
  CHECK_FALSE(first->find("c2", "a.bin"));
  CHECK(views.verified_files(id) == first);  // the same parse, while the file is unchanged

  catalog.put(entry_with(
      "c1", {{"a.bin", 3, "", "sha1a", "verified"}, {"b.bin", 5, "", "sha1b", "verified"}}));
  const auto second = views.verified_files(id);
  REQUIRE(second);
  CHECK(second != first);
  CHECK(second->find("c1", "b.bin"));

  catalog.remove(id);
  CHECK_FALSE(views.verified_files(id));
}
