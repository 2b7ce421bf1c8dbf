#pragma once
// HiveProcess: the real rbee-hive binary, started on a free loopback port with a temp cache,
// stopped with SIGTERM when the object goes away (which must exit 0 with no sanitizer report).

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace rbee::testing {

struct HiveOptions {
  std::filesystem::path cache_dir;
  std::vector<std::string> extra_args;
  std::map<std::string, std::string> env;  // added to (or replacing in) the test's environment
  std::string api_token;                   // sent by client() when set
  int port = 0;                            // 0: a free port
  // False: the constructor returns once the process runs, before it serves (a test that kills
  // it during its start).
  bool wait_until_serving = true;
};

class HiveProcess {
 public:
  // Starts the hive and waits until /health answers; throws when it does not come up.
  explicit HiveProcess(HiveOptions options);
  ~HiveProcess();
  HiveProcess(const HiveProcess&) = delete;
  HiveProcess& operator=(const HiveProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // A client for this hive (with the API token, if any), keep-alive, 10 s timeouts.
  std::unique_ptr<httplib::Client> client() const;

  // POST /v1/jobs with a JSON body; returns the response (or nullptr on transport failure).
  httplib::Result submit(const nlohmann::json& body) const;
  // Submits and returns the job id; fails the test when the hive does not answer 202.
  std::string submit_job(const nlohmann::json& body) const;

  // Sends `signal` and waits up to `timeout` for the exit; returns the exit code, or nullopt
  // when the process did not exit in time (or died of a signal).
  std::optional<int> stop(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Waits for the process to exit by itself; nullopt when it is still running after `timeout`.
  std::optional<int> wait_for_exit(std::chrono::milliseconds timeout);
  bool running();

  std::string log() const;  // everything the hive wrote to stderr so far

 private:
  HiveOptions options_;
  std::filesystem::path log_path_;
  pid_t pid_ = -1;
  int port_ = 0;
};

int free_port();

const char* hive_binary();  // the rbee-hive under test

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  std::string out, err;
};

// Runs rbee-hive with `args` (a client command, say) in the hermetic test environment plus
// `env`, and waits up to `timeout`.
CommandResult run_hive_command(std::vector<std::string> args,
                               const std::map<std::string, std::string>& env = {},
                               std::chrono::seconds timeout = std::chrono::seconds(60));

}  // namespace rbee::testing
