#include <doctest/doctest.h>
#include <rbee/hive/request_checks.hpp>

#include <string>
#include <vector>

using namespace rbee::hive;

TEST_CASE("Last-Event-ID is a plain decimal number") {
  CHECK(parse_last_event_id("0") == 0u);
  CHECK(parse_last_event_id("42") == 42u);
  CHECK_FALSE(parse_last_event_id(""));
  CHECK_FALSE(parse_last_event_id("-1"));
  CHECK_FALSE(parse_last_event_id("4 2"));
  CHECK_FALSE(parse_last_event_id("99999999999999999999999"));
}

TEST_CASE("host_name strips the port, lowercases, keeps IPv6 brackets and refuses garbage") {
  CHECK(host_name("LocalHost:7835") == "localhost");
  CHECK(host_name("127.0.0.1") == "127.0.0.1");
  CHECK(host_name("[::1]:7835") == "[::1]");
  CHECK(host_name("example.com.") == "example.com");
  CHECK_FALSE(host_name(""));
  CHECK_FALSE(host_name("a:b"));
  CHECK_FALSE(host_name("a:99999"));
  CHECK_FALSE(host_name("[::1"));
  CHECK_FALSE(host_name("[::1]x"));
  CHECK_FALSE(host_name("evil.example@127.0.0.1"));
  CHECK_FALSE(host_name("a b"));
}

TEST_CASE("only loopback names and the operator's names are allowed hosts") {
  const std::vector<std::string> none;
  const std::vector<std::string> extra = {"hive.internal"};
  CHECK(is_allowed_host("127.0.0.1:7835", none));
  CHECK(is_allowed_host("localhost", none));
  CHECK(is_allowed_host("[::1]:1", none));
  CHECK(is_allowed_host("", none));  // HTTP/1.0 without Host: not a browser
  CHECK_FALSE(is_allowed_host("evil.example", none));
  CHECK_FALSE(is_allowed_host("127.0.0.1.nip.io", none));
  CHECK_FALSE(is_allowed_host("hive.internal", none));
  CHECK(is_allowed_host("HIVE.internal:7835", extra));
}

TEST_CASE("a state-changing request's Origin must be the hive's own") {
  CHECK(is_same_origin("", "127.0.0.1:7835"));
  CHECK(is_same_origin("http://127.0.0.1:7835", "127.0.0.1:7835"));
  CHECK(is_same_origin("https://hive.example", "hive.example"));
  CHECK_FALSE(is_same_origin("http://evil.example", "127.0.0.1:7835"));
  CHECK_FALSE(is_same_origin("null", "127.0.0.1:7835"));
  CHECK_FALSE(is_same_origin("http://127.0.0.1:7836", "127.0.0.1:7835"));
  CHECK_FALSE(is_same_origin("http://127.0.0.1:7835", ""));
}
