#include <doctest/doctest.h>
#include <rbee/provisioner/model_provisioner.hpp>

using namespace rbee::provisioner;

namespace {
std::vector<std::string> paths(const std::vector<Sibling>& files) {
  std::vector<std::string> result;
  for (const auto& f : files) result.push_back(f.path);
  return result;
}
const std::vector<Sibling> kRepo = {
    {"config.json"}, {"model-q4.gguf"}, {"model-q8.gguf"}, {"sub/dir/extra.gguf"}, {"README.md"}};
}  // namespace

TEST_CASE("no patterns select every file") {
  CHECK(select_files(kRepo, std::nullopt, {}, {}).size() == kRepo.size());
}

TEST_CASE("include globs match across folders and exclude wins") {
  CHECK(paths(select_files(kRepo, std::nullopt, {"*.gguf"}, {})) ==
        std::vector<std::string>{"model-q4.gguf", "model-q8.gguf", "sub/dir/extra.gguf"});
  CHECK(paths(select_files(kRepo, std::nullopt, {"*.gguf", "*.json"}, {"*q8*", "sub/*"})) ==
        std::vector<std::string>{"config.json", "model-q4.gguf"});
}

TEST_CASE("rbee's org/name:file form selects exactly that file, or fails clearly") {
  CHECK(paths(select_files(kRepo, std::string("sub/dir/extra.gguf"), {}, {})) ==
        std::vector<std::string>{"sub/dir/extra.gguf"});
  CHECK_THROWS_WITH(select_files(kRepo, std::string("absent.gguf"), {}, {}),
                    doctest::Contains("absent.gguf"));
}
