#include <doctest/doctest.h>
#include <rbee/hive/config.hpp>

using rbee::hive::HiveConfig;

namespace {
HiveConfig parse(std::vector<std::string> args) {
  HiveConfig config;
  CLI::App app;
  rbee::hive::add_config_options(app, config);
  args.insert(args.begin(), "rbee-hive");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
  rbee::hive::finalize_config(config);
  return config;
}
}  // namespace

TEST_CASE("defaults: loopback, port 7835, cache under the home folder") {
  ::setenv("HOME", "/home/tester", 1);
  ::unsetenv("HIVE_PORT");
  ::unsetenv("RBEE_CACHE_DIR");
  const auto config = parse({});
  CHECK(config.bind == "127.0.0.1");
  CHECK(config.port == 7835);
  CHECK(config.cache_dir == "/home/tester/.cache/rbee/models");
  CHECK(config.api_token.empty());
}

TEST_CASE("environment variables set what flags do not, and flags win") {
  ::setenv("HIVE_PORT", "9001", 1);
  ::setenv("RBEE_CACHE_DIR", "/srv/models", 1);
  auto config = parse({});
  CHECK(config.port == 9001);
  CHECK(config.cache_dir == "/srv/models");
  config = parse({"--port", "9002"});
  CHECK(config.port == 9002);
  ::unsetenv("HIVE_PORT");
  ::unsetenv("RBEE_CACHE_DIR");
}

TEST_CASE("exposing the hive beyond loopback needs a token") {
  CHECK_THROWS_WITH(parse({"--bind", "0.0.0.0"}), doctest::Contains("RBEE_API_TOKEN"));
  CHECK(parse({"--bind", "0.0.0.0", "--api-token", "t0ken"}).bind == "0.0.0.0");
  CHECK(parse({"--bind", "::1"}).bind == "::1");
}

TEST_CASE("bad values are refused by the parser") {
  CHECK_THROWS(parse({"--port", "70000"}));
  CHECK_THROWS(parse({"--log-level", "loud"}));
  CHECK_THROWS(parse({"--max-concurrent-jobs", "0"}));
}
