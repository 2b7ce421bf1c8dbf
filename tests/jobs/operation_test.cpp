#include <doctest/doctest.h>
#include <rbee/jobs/operation.hpp>

using namespace rbee::jobs;

namespace {

OperationErrorCode error_code_of(std::string_view body) {
  try {
    parse_operation(body);
  } catch (const OperationError& error) {
    return error.code();
  }
  FAIL("parse_operation accepted: " << body);
  return OperationErrorCode::invalid_json;
}

}  // namespace

TEST_CASE("rbee's model_download parses with defaults and ignores unknown fields") {
  auto op = parse_operation(R"({"operation":"model_download","hive_id":"localhost",
                                "model":"org/name","extra":{"x":1}})");
  const auto& download = std::get<ModelDownload>(op);
  CHECK(download.model == "org/name");
  CHECK(download.revision == "main");
  CHECK(download.include.empty());
  CHECK(operation_name(op) == "model_download");
}

TEST_CASE("model_download takes revision and include/exclude lists") {
  auto op = parse_operation(R"({"operation":"model_download","model":"o/n","revision":"refs/pr/1",
                                "include":["*.gguf","*.json"],"exclude":"*.bin"})");
  const auto& download = std::get<ModelDownload>(op);
  CHECK(download.revision == "refs/pr/1");
  CHECK(download.include == std::vector<std::string>{"*.gguf", "*.json"});
  CHECK(download.exclude == std::vector<std::string>{"*.bin"});
  CHECK(download.hive_id == "localhost");
}

TEST_CASE("model_list, model_get and model_delete parse") {
  CHECK(std::holds_alternative<ModelList>(parse_operation(R"({"operation":"model_list"})")));
  CHECK(std::get<ModelGet>(parse_operation(R"({"operation":"model_get","id":"o/n"})")).id == "o/n");
  CHECK(std::get<ModelDelete>(parse_operation(R"({"operation":"model_delete","id":"o/n"})")).id ==
        "o/n");
}

TEST_CASE("malformed bodies are refused with the matching code") {
  CHECK(error_code_of("{not json") == OperationErrorCode::invalid_json);
  CHECK(error_code_of("[1,2]") == OperationErrorCode::invalid_json);
  CHECK(error_code_of("42") == OperationErrorCode::invalid_json);
  CHECK(error_code_of("{}") == OperationErrorCode::missing_field);
  CHECK(error_code_of(R"({"operation":7})") == OperationErrorCode::invalid_field);
  CHECK(error_code_of(R"({"operation":"model_download"})") == OperationErrorCode::missing_field);
  CHECK(error_code_of(R"({"operation":"model_download","model":""})") ==
        OperationErrorCode::missing_field);
  CHECK(error_code_of(R"({"operation":"model_download","model":5})") ==
        OperationErrorCode::invalid_field);
  CHECK(error_code_of(R"({"operation":"model_download","model":"o/n","include":[1]})") ==
        OperationErrorCode::invalid_field);
  CHECK(error_code_of(R"({"operation":"model_get"})") == OperationErrorCode::missing_field);
}

TEST_CASE("rbee operations this hive does not serve parse as unserved; unknown ones are errors") {
  for (const char* name : {"worker_spawn", "model_load", "model_unload", "infer", "hive_check"}) {
    CAPTURE(name);
    const Operation operation = parse_operation(std::string(R"({"operation":")") + name + "\"}");
    REQUIRE(std::holds_alternative<UnservedOperation>(operation));
    CHECK(operation_name(operation) == name);
  }
  CHECK(unserved_message("worker_spawn").find("model_download") != std::string::npos);
  CHECK(error_code_of(R"({"operation":"make_coffee"})") == OperationErrorCode::unknown_operation);
}

TEST_CASE("the error for an unknown operation names the supported ones") {
  try {
    parse_operation(R"({"operation":"make_coffee"})");
    FAIL("accepted");
  } catch (const OperationError& error) {
    const std::string message = error.what();
    for (auto name : supported_operations()) CHECK(message.find(name) != std::string::npos);
  }
}
