#pragma once
// The operator's subcommands of rbee-hive: pull, watch, jobs, cancel and models. Each is a
// client of a running hive over HTTP (--hive URL, token from RBEE_API_TOKEN).

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace rbee::cli {

inline constexpr const char* kDefaultHiveUrl = "http://127.0.0.1:7835";

struct OperatorOptions {
  // --hive, else RBEE_HIVE_URL, else kDefaultHiveUrl: a flag always beats the environment.
  std::string hive_url;
  std::string token;  // from RBEE_API_TOKEN only: a flag would show it in `ps`
  bool json = false;  // jobs/models: the API's JSON; pull/watch: each event as a JSON line
  // pull
  std::string model;
  std::string revision;
  std::vector<std::string> include, exclude;
  int connections = 0;
  // watch, cancel, models get/rm
  std::string id;
};

// Adds the subcommands to `app`. After app.parse(), run() runs the one given
// and returns the exit code, or nullopt when none was given (the daemon's turn).
class OperatorCommands {
 public:
  explicit OperatorCommands(CLI::App& app);
  std::optional<int> run();

 private:
  int pull();
  int watch();
  int jobs();
  int cancel();
  int models_list();
  int models_get();
  int models_rm();

  OperatorOptions options_;
  CLI::App* pull_ = nullptr;
  CLI::App* watch_ = nullptr;
  CLI::App* jobs_ = nullptr;
  CLI::App* cancel_ = nullptr;
  CLI::App* models_ = nullptr;
  CLI::App* models_get_ = nullptr;
  CLI::App* models_rm_ = nullptr;
};

}  // namespace rbee::cli
