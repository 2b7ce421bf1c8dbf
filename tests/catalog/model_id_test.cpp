#include <doctest/doctest.h>
#include <rbee/catalog/model_id.hpp>

using namespace rbee::catalog;

namespace {
bool id_refused(std::string_view text) {
  try {
    parse_model_id(text);
    return false;
  } catch (const CatalogError& error) {
    return error.code() == CatalogErrorCode::invalid_model_id;
  }
}
bool path_refused(std::string_view text) {
  try {
    validate_repo_path(text);
    return false;
  } catch (const CatalogError& error) {
    return error.code() == CatalogErrorCode::invalid_path;
  }
}
}  // namespace

TEST_CASE("Hub-style ids parse into org and name") {
  const ModelId id = parse_model_id("TheBloke/Llama-2-7B.GGUF_v1");
  CHECK(id.org == "TheBloke");
  CHECK(id.name == "Llama-2-7B.GGUF_v1");
  CHECK(id.str() == "TheBloke/Llama-2-7B.GGUF_v1");
}

TEST_CASE("hostile or malformed ids are refused") {
  for (std::string_view bad :
       {"", "a/b/c", "../x", "/etc", "org/..", "org/.hidden", "org/na--me", "org/na..me",
        "org/name-", "org/name.", "-org/name", "org/na me", "org/na\nme", "org/na\x01me", "org/",
        "/name", "org\\name/x", "org/name:"}) {
    CAPTURE(bad);
    CHECK(id_refused(bad));
  }
  CHECK(id_refused(std::string(10000, 'a')));
  CHECK(id_refused("org/" + std::string(kMaxModelIdLength, 'a')));
}

TEST_CASE("a model's folder is the Hugging Face cache's, and maps back to exactly one id") {
  const ModelId gpt2 = parse_model_id("gpt2");
  CHECK(gpt2.org.empty());
  CHECK(gpt2.str() == "gpt2");
  CHECK(gpt2.folder() == "models--gpt2");
  CHECK(parse_model_id("org/name.v2").folder() == "models--org--name.v2");
  CHECK(parse_model_id("bert-base-uncased").str() == "bert-base-uncased");
  CHECK(parse_model_reference("t5-small:config.json").id.str() == "t5-small");
  CHECK(model_id_of_folder("models--gpt2") == gpt2);
  CHECK(model_id_of_folder("models--gpt2--other").str() == "gpt2/other");
  for (const char* not_a_model :
       {"datasets--org--x", "models--", "models--a--b--c", "gpt2", "models--org--", ".locks"}) {
    CAPTURE(not_a_model);
    CHECK_THROWS_AS(model_id_of_folder(not_a_model), CatalogError);
  }
  // Schema 1's folders, for the migration.
  CHECK(gpt2.schema1_folder() == "_/gpt2");
  CHECK(model_id_of_schema1_folder("_", "gpt2") == gpt2);
  CHECK(model_id_of_schema1_folder("gpt2", "other").str() == "gpt2/other");
  for (std::string_view bad : {"_", "_/gpt2", "-gpt2", "gpt2-", "gp..t2", "."}) {
    CAPTURE(bad);
    CHECK(id_refused(bad));
  }
}

TEST_CASE("error messages do not echo long or unprintable input") {
  try {
    parse_model_id(std::string(10000, 'a'));
    FAIL("accepted");
  } catch (const CatalogError& error) {
    CHECK(std::string(error.what()).size() < 200);
  }
}

TEST_CASE("rbee's org/name:file form splits off a validated file path") {
  auto reference = parse_model_reference("org/name:sub/model-q4.gguf");
  CHECK(reference.id.str() == "org/name");
  CHECK(reference.file == "sub/model-q4.gguf");
  CHECK_FALSE(parse_model_reference("org/name").file);
  CHECK_THROWS_AS(parse_model_reference("org/name:../../etc/passwd"), CatalogError);
  CHECK_THROWS_AS(parse_model_reference("org/name:"), CatalogError);
}

TEST_CASE("repo paths that could escape or clash are refused") {
  for (std::string_view bad :
       {"", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "a\\b", "a\nb",
        "metadata.yaml", "metadata.yaml/x", ".rbee", ".rbee/x.part"}) {
    CAPTURE(bad);
    CHECK(path_refused(bad));
  }
  CHECK(path_refused(std::string(2000, 'a')));
}

TEST_CASE("ordinary repo paths are accepted") {
  for (std::string_view good : {"config.json", "sub/dir/model.safetensors", ".gitattributes",
                                "a b.txt", "sub/metadata.yaml", "ünïcode.txt",
                                // the hive's working files live in .rbee/, so these are free
                                "x.part", "dir/x.part", "x.part.ranges", "X.part.ranges.tmp",
                                ".metadata.yaml.1.tmp", "sub/.rbee"}) {
    CAPTURE(good);
    CHECK_NOTHROW(validate_repo_path(good));
  }
}
