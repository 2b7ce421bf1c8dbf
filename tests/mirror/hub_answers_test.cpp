#include <doctest/doctest.h>

#include <rbee/mirror/hub_mirror.hpp>

#include "hub_answers.hpp"

using namespace rbee::mirror;

TEST_CASE("split_revision: the revision is one segment, or three for refs/pr and refs/convert") {
  using Split = std::pair<std::string, std::string>;
  CHECK(split_revision("main/a/b.gguf") == Split{"main", "a/b.gguf"});
  CHECK(split_revision("main") == Split{"main", ""});
  CHECK(split_revision("refs/pr/12/config.json") == Split{"refs/pr/12", "config.json"});
  CHECK(split_revision("refs/convert/parquet") == Split{"refs/convert/parquet", ""});
  CHECK(split_revision("refs/pr") == Split{"refs", "pr"});  // no PR number: a branch "refs"
  CHECK_FALSE(split_revision(""));
  CHECK_FALSE(split_revision("/x"));
}

TEST_CASE("mirror routes are labelled by template, never by the path asked") {
  CHECK(mirror_route_of("/hf/api/models/org/m") == "/hf/api/models/{repo}");
  CHECK(mirror_route_of("/hf/api/models/org/m/revision/main") ==
        "/hf/api/models/{repo}/revision/{rev}");
  CHECK(mirror_route_of("/hf/api/models/org/m/tree/main/a") == "/hf/api/models/{repo}/tree/{rev}");
  CHECK(mirror_route_of("/hf/org/m/resolve/main/x.bin") == "/hf/{repo}/resolve/{rev}/{path}");
  CHECK(mirror_route_of("/hf/whatever") == "/hf/other");
  CHECK(mirror_route_of("/v1/jobs").empty());
}

TEST_CASE("etag_of: the sha256 of an LFS file, the git blob id of another, quoted") {
  rbee::provisioner::Sibling lfs{"w.bin", 1, "blob", "sha"};
  rbee::provisioner::Sibling plain{"c.json", 1, "blob", ""};
  CHECK(etag_of(lfs) == "\"sha\"");
  CHECK(etag_of(plain) == "\"blob\"");
}
