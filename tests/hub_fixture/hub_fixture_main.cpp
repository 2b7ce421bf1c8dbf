// rbee-hub-fixture: the test Hub as a standalone process, for measurements and manual runs.
// Prints "endpoint http://127.0.0.1:<port>" once it serves, then runs until SIGINT/SIGTERM, and
// then prints "content bytes sent N" (file bytes it handed to connections).
//
//   rbee-hub-fixture --repo bench/one --lfs-file model.gguf:1073741824 --file config.json:600

#include <signal.h>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "hub_fixture/hub_fixture.hpp"

namespace {

rbee::testing::FixtureFile parse_file(const std::string& spec, bool lfs, std::uint64_t seed) {
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos)
    throw CLI::ValidationError("file", "expected path:size, got " + spec);
  return {spec.substr(0, colon), std::stoull(spec.substr(colon + 1)), lfs, seed};
}

}  // namespace

int main(int argc, char** argv) {
  std::string repo_id = "bench/one";
  std::vector<std::string> lfs_files, regular_files;
  std::uint64_t rate_limit = 0;
  CLI::App app{"A local Hugging Face Hub serving generated files (rbee-hive's test fixture)"};
  app.add_option("--repo", repo_id, "Repo id to serve (default bench/one)");
  app.add_option("--lfs-file", lfs_files, "path:size of an LFS file (served by the CDN listener)");
  app.add_option("--file", regular_files, "path:size of a regular file");
  app.add_option("--rate-limit", rate_limit, "Bytes per second per connection (0: none)");
  CLI11_PARSE(app, argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  rbee::testing::HubFixture hub;
  rbee::testing::FixtureRepo repo;
  repo.id = repo_id;
  std::uint64_t seed = 1;
  for (const auto& spec : lfs_files) repo.files.push_back(parse_file(spec, true, seed++));
  for (const auto& spec : regular_files) repo.files.push_back(parse_file(spec, false, seed++));
  hub.add_repo(repo);
  hub.set_rate_limit(rate_limit);
  std::cout << "endpoint " << hub.endpoint() << std::endl;

  int signal = 0;
  sigwait(&signals, &signal);
  // What left this "Hub": the fleet's measure (each byte once, DESIGN §13).
  std::cout << "content bytes sent " << hub.content_bytes_sent() << std::endl;
  return 0;
}
