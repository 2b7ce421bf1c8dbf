// rbee-hub-fixture: the test Hub as a standalone process, for measurements and manual runs.
// Prints "endpoint http://127.0.0.1:<port>" once it serves, then runs until SIGINT/SIGTERM, and
// then prints "content bytes sent N" (file bytes it handed to connections).
//
//   rbee-hub-fixture --repo bench/one --lfs-file model.gguf:1073741824 --file config.json:600
//
// Xet files (--xet-file) are also in the fixture's Xet storage. SIGUSR2 prints "xet bytes sent
// N" (xorb bytes the transfer server sent); SIGUSR1 prints it too, then publishes revision 2 of
// the repo (a new commit on main) in which --update-percent of each Xet file's 64 KiB chunks
// changed, and prints "revision 2 <commit>".

#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "hub_fixture/hub_fixture.hpp"
#include "hub_fixture/tiny_gguf.hpp"

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
  std::vector<std::string> lfs_files, regular_files, xet_files, llama_files, update_only;
  std::uint64_t rate_limit = 0;
  double update_percent = 1;
  std::size_t ranges_per_url = 4;
  int port = 0;
  CLI::App app{"A local Hugging Face Hub serving generated files (rbee-hive's test fixture)"};
  app.footer(
      "Once it serves, its first line on stdout is 'endpoint http://127.0.0.1:<port>': point "
      "HF_ENDPOINT there. It runs until SIGINT or SIGTERM, then prints 'content bytes sent N'. "
      "SIGUSR2 prints 'xet bytes sent N'; SIGUSR1 prints it too and publishes revision 2 "
      "('revision 2 <commit>').");
  app.add_option("--port", port, "Port of the Hub's API listener (default 0: a free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--repo", repo_id, "Repo id to serve (default bench/one)");
  app.add_option("--lfs-file", lfs_files, "path:size of an LFS file (served by the CDN listener)");
  app.add_option("--file", regular_files, "path:size of a regular file");
  app.add_option("--xet-file", xet_files, "path:size of an LFS file also in Xet storage");
  app.add_option("--llama-gguf", llama_files,
                 "path[:embedding] of a tiny valid llama GGUF (LFS; embedding 32 by default, "
                 "under 1 MiB; 256 makes a few MiB)");
  app.add_option("--update-percent", update_percent,
                 "Of each Xet file's chunks, the share revision 2 changes (default 1)");
  app.add_option("--update-only", update_only,
                 "Revision 2 changes only these files (a regular one: its first 64 bytes); "
                 "default: every Xet file");
  app.add_option("--ranges-per-url", ranges_per_url,
                 "Xet: the most chunk ranges a v2 fetch URL covers (default 4; 1: no multi-range)");
  app.add_option("--rate-limit", rate_limit, "Bytes per second per connection (0: none)");
  CLI11_PARSE(app, argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);
  sigaddset(&signals, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<rbee::testing::HubFixture> fixture;
  try {
    fixture = std::make_unique<rbee::testing::HubFixture>(port);
  } catch (const std::exception& error) {
    std::cerr << "rbee-hub-fixture: " << error.what() << '\n';
    return 1;
  }
  rbee::testing::HubFixture& hub = *fixture;
  rbee::testing::FixtureRepo repo;
  repo.id = repo_id;
  std::uint64_t seed = 1;
  for (const auto& spec : lfs_files) repo.files.push_back(parse_file(spec, true, seed++));
  for (const auto& spec : regular_files) repo.files.push_back(parse_file(spec, false, seed++));
  for (const auto& spec : xet_files) {
    auto file = parse_file(spec, true, seed++);
    file.xet = true;
    // Fixed 64 KiB chunks, stored as they are (random bytes do not compress): the update
    // changes an exact share of them.
    file.xet_layout = {rbee::testing::XetChunking::fixed, rbee::testing::XetCompression::none,
                       ranges_per_url, 1024, 0};
    repo.files.push_back(file);
  }
  for (const auto& spec : llama_files) {
    const auto colon = spec.find(':');
    rbee::testing::TinyLlamaShape shape;
    if (colon != std::string::npos) shape.embedding = std::stoul(spec.substr(colon + 1));
    rbee::testing::FixtureFile file;
    file.path = spec.substr(0, colon);
    file.lfs = true;
    file.bytes = std::make_shared<const std::string>(rbee::testing::tiny_llama_gguf(shape));
    file.size = file.bytes->size();
    repo.files.push_back(file);
  }
  hub.add_repo(repo);
  hub.set_rate_limit(rate_limit);
  std::cout << "endpoint " << hub.endpoint() << std::endl;

  int signal = 0;
  for (;;) {
    sigwait(&signals, &signal);
    if (signal != SIGUSR1 && signal != SIGUSR2) break;
    std::cout << "xet bytes sent " << hub.xet().transfer_bytes_sent() << std::endl;
    if (signal == SIGUSR2) continue;
    // Revision 2: 64 bytes changed at the start of one chunk in every 100 / update_percent.
    repo.commit = "2222222222222222222222222222222222222222";
    for (auto& file : repo.files) {
      const bool changes = update_only.empty() ? file.xet
                                               : std::find(update_only.begin(), update_only.end(),
                                                           file.path) != update_only.end();
      if (!changes) continue;
      if (!file.xet) {
        file.patches.push_back({0, std::min<std::uint64_t>(64, file.size), 999});
        continue;
      }
      const std::uint64_t chunk = 64 * 1024;
      const auto every = static_cast<std::uint64_t>(100.0 / update_percent);
      for (std::uint64_t at = chunk * (every / 2); at < file.size; at += every * chunk) {
        file.patches.push_back({at, 64, 999});
      }
    }
    hub.add_repo(repo);
    std::cout << "revision 2 " << repo.commit << std::endl;
  }
  // What left this "Hub": the fleet's measure (each byte once, DESIGN §13).
  std::cout << "content bytes sent " << hub.content_bytes_sent() << std::endl;
  return 0;
}
