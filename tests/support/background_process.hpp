#pragma once
// BackgroundProcess: a helper server a test needs beside the hive (tinyproxy, nginx), run in
// the foreground of its own process, stopped with SIGTERM (then SIGKILL) when the object goes.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace rbee::testing {

class BackgroundProcess {
 public:
  // Starts argv[0] (looked up in PATH and /usr/sbin) with its output to `log_file`, then waits
  // until a TCP connection to 127.0.0.1:`port` succeeds; throws when it does not.
  BackgroundProcess(std::vector<std::string> argv, const std::string& log_file, int port);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

 private:
  pid_t pid_ = -1;
};

// Runs a command to completion (argv, no shell); returns its exit code.
int run_command(const std::vector<std::string>& argv, const std::string& log_file);

}  // namespace rbee::testing
