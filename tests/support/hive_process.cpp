#include "support/hive_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <stdexcept>
#include <thread>

#include <doctest/doctest.h>

#include "support/temp_dir.hpp"

extern char** environ;

namespace rbee::testing {
namespace {

std::vector<std::string> environment_with(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    const std::string text(*entry);
    const std::string key = text.substr(0, text.find('='));
    // Never let the developer's own settings leak into a hermetic test: nor a proxy of the
    // machine, which would carry loopback requests elsewhere.
    std::string lower = key;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (extra.count(key) || key.starts_with("HIVE_") || key.starts_with("RBEE_") ||
        key.starts_with("HF_") || key == "HUGGING_FACE_HUB_TOKEN" || lower.ends_with("_proxy")) {
      continue;
    }
    env.push_back(text);
  }
  for (const auto& [key, value] : extra) env.push_back(key + "=" + value);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (auto& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

}  // namespace

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

const char* hive_binary() {
  return RBEE_HIVE_BINARY;
}

CommandResult run_hive_command(std::vector<std::string> args,
                               const std::map<std::string, std::string>& env,
                               std::chrono::seconds timeout) {
  TempDir dir;
  const auto out_path = dir / "stdout", err_path = dir / "stderr";
  args.insert(args.begin(), RBEE_HIVE_BINARY);
  std::vector<std::string> environment = environment_with(env);
  auto argv = c_strings(args);
  auto envp = c_strings(environment);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDOUT_FILENO);
    ::dup2(::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDERR_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  CommandResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int status = 0;;) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  result.out = read_text(out_path);
  result.err = read_text(err_path);
  return result;
}

HiveProcess::HiveProcess(HiveOptions options) : options_(std::move(options)) {
  log_path_ = options_.cache_dir.parent_path() /
              ("hive-" + options_.cache_dir.filename().string() + "-" + std::to_string(::getpid()) +
               "-" + std::to_string(free_port()) + ".log");
  // A port taken between free_port() and the hive's bind is rare; try a few.
  for (int attempt = 0; attempt < 3; ++attempt) {
    port_ = options_.port != 0 ? options_.port : free_port();
    std::vector<std::string> args = {RBEE_HIVE_BINARY, "--port", std::to_string(port_),
                                     "--cache-dir", options_.cache_dir.string()};
    args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
    std::vector<std::string> env = environment_with(options_.env);
    auto argv = c_strings(args);
    auto envp = c_strings(env);

    pid_ = ::fork();
    if (pid_ == 0) {
      const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(log, STDERR_FILENO);
      ::dup2(log, STDOUT_FILENO);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    if (!options_.wait_until_serving) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline && running()) {
      httplib::Client probe("127.0.0.1", port_);
      probe.set_connection_timeout(std::chrono::milliseconds(200));
      if (auto res = probe.Get("/health"); res && res->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stop(SIGKILL);
  }
  throw std::runtime_error("rbee-hive did not start; its log:\n" + log());
}

HiveProcess::~HiveProcess() {
  // Every test ends with a graceful stop, so each one also checks shutdown, and a sanitizer
  // report from inside the daemon fails the test that caused it.
  if (pid_ > 0) {
    const auto code = stop(SIGTERM);
    CHECK_MESSAGE(code == 0, "rbee-hive did not exit cleanly on SIGTERM; its log:\n" << log());
  }
  const std::string text = log();
  CHECK_MESSAGE(text.find("Sanitizer") == std::string::npos, text);
  CHECK_MESSAGE(text.find("runtime error:") == std::string::npos, text);
  std::error_code ec;
  std::filesystem::remove(log_path_, ec);
}

bool HiveProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::optional<int> HiveProcess::wait_for_exit(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

std::optional<int> HiveProcess::stop(int signal, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  ::kill(pid_, signal);
  auto code = wait_for_exit(timeout);
  if (pid_ > 0) {  // did not exit in time
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  return code;
}

std::unique_ptr<httplib::Client> HiveProcess::client() const {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port_);
  client->set_connection_timeout(std::chrono::seconds(10));
  client->set_read_timeout(std::chrono::seconds(10));
  client->set_keep_alive(true);
  if (!options_.api_token.empty()) client->set_bearer_token_auth(options_.api_token);
  return client;
}

httplib::Result HiveProcess::submit(const nlohmann::json& body) const {
  return client()->Post("/v1/jobs", body.dump(), "application/json");
}

std::string HiveProcess::submit_job(const nlohmann::json& body) const {
  auto res = submit(body);
  REQUIRE(res);
  REQUIRE_MESSAGE(res->status == 202, res->body);
  return nlohmann::json::parse(res->body).at("job_id").get<std::string>();
}

std::string HiveProcess::log() const {
  return read_text(log_path_);
}

}  // namespace rbee::testing
