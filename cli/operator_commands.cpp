#include "rbee/cli/operator_commands.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <rbee/narration/human_units.hpp>

#include "rbee/cli/hive_client.hpp"
#include "rbee/cli/progress_view.hpp"

namespace rbee::cli {
namespace {

using narration::format_bytes;
using nlohmann::json;

constexpr int kExitFailed = 1;
constexpr int kExitInterrupted = 130;  // like a shell's Ctrl+C
constexpr int kReconnectAttempts = 10;
constexpr auto kRepaintInterval = std::chrono::milliseconds(250);

// 0 when stdout is not a terminal (plain lines), else its width in columns.
int terminal_width() {
  if (!::isatty(STDOUT_FILENO)) return 0;
  if (const char* term = std::getenv("TERM"); term && std::string_view(term) == "dumb") return 0;
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

// Ctrl+C (or SIGTERM) calls `on_interrupt` once, on a thread of its own; a second one exits
// at once. Signals are blocked in every thread, so they reach only this waiter.
class InterruptWatcher {
 public:
  explicit InterruptWatcher(std::function<void()> on_interrupt) {
    sigset_t signals = watched();
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    waiter_ = std::thread([signals, on_interrupt = std::move(on_interrupt)] {
      for (int count = 0;;) {
        int signal = 0;
        sigwait(&signals, &signal);
        if (signal == SIGUSR1) return;  // the destructor's wake-up
        if (++count > 1) std::_Exit(kExitInterrupted);
        on_interrupt();
      }
    });
  }
  ~InterruptWatcher() {
    pthread_kill(waiter_.native_handle(), SIGUSR1);
    waiter_.join();
  }

 private:
  static sigset_t watched() {
    sigset_t signals;
    sigemptyset(&signals);
    for (int signal : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&signals, signal);
    return signals;
  }
  std::thread waiter_;
};

// Repaints the bars a few times a second, so the clock moves between progress events.
class Repainter {
 public:
  explicit Repainter(ProgressView& view) {
    if (!view.live()) return;
    thread_ = std::jthread([&view, this](std::stop_token stop) {
      std::mutex mutex;
      std::unique_lock lock(mutex);
      while (!wake_.wait_for(lock, stop, kRepaintInterval, [] { return false; })) {
        if (stop.stop_requested()) return;
        view.repaint();
      }
    });
  }

 private:
  std::condition_variable_any wake_;
  std::jthread thread_;  // last: stops and joins before wake_ goes
};

struct FollowResult {
  std::string terminal;   // [DONE], [ERROR] …, [CANCELLED]
  std::string last_info;  // the last info narration: what the job achieved
  std::string installed;  // a model_download's model (the fallback that was installed)
};

// Follows the job's stream to its end, reconnecting with Last-Event-ID when it drops. With
// `as_json`, every event (and the terminal line) is printed as it came, one per line, instead
// of being shown in `view`.
FollowResult follow_job(HiveClient& client, const std::string& job_id, ProgressView& view,
                        const std::atomic<bool>& stopping, bool as_json = false) {
  FollowResult result;
  std::uint64_t last_id = 0;
  int failures = 0;
  for (;;) {
    try {
      result.terminal = client.stream(job_id, last_id, [&](const StreamMessage& message) {
        failures = 0;
        if (as_json) std::cout << terminal_safe(message.data) << std::endl;
        if (is_terminal_line(message.data)) return;
        const auto event = json::parse(message.data, nullptr, false);
        if (!event.is_object()) return;  // not an API event; nothing to show
        const std::string action = event.value("action", "");
        if (event.value("type", "") == "data" && action == "model_download") {
          const json payload = event.value("payload", json::object());
          if (payload.contains("model") && payload["model"].is_string())
            result.installed = payload["model"].get<std::string>();
        }
        if (as_json) return;
        // The job's own start/finish lines say less than the operation's last word.
        if (event.value("level", "") == "info" && action != "download_progress" &&
            !action.starts_with("job_"))
          result.last_info = event.value("human", "");
        view.on_event(event);
      });
      return result;
    } catch (const ClientError& error) {
      if (error.kind() != ClientErrorKind::unreachable || stopping ||
          ++failures > kReconnectAttempts)
        throw;
      const auto delay = std::chrono::milliseconds(std::min(5000, 250 << std::min(failures, 5)));
      view.note(fmt::format("Lost the stream of {} ({}); reconnecting in {:.1f} s", job_id,
                            error.what(), delay.count() / 1000.0));
      std::this_thread::sleep_for(delay);
    }
  }
}

// What the terminal line means for the exit code, said on stderr when it is not success.
int exit_code_of(const FollowResult& result, const std::string& job_id,
                 const std::string& cancelled_hint) {
  if (result.terminal == "[DONE]") return 0;
  if (result.terminal == "[CANCELLED]") {
    std::cerr << fmt::format("rbee-hive: {} was cancelled{}\n", job_id, cancelled_hint);
    return kExitInterrupted;
  }
  std::string reason = result.terminal.substr(std::min<std::size_t>(result.terminal.size(), 8));
  std::cerr << fmt::format("rbee-hive: {} failed: {}\n", job_id,
                           reason.empty() ? "?" : terminal_safe(reason));
  return kExitFailed;
}

// The end of a followed job, the same for pull and watch: the bars closed (marked when the job
// did not succeed), the closing sentence, and for an installed model the folder a worker
// loads as the last line (as `hf download` prints the path). Returns the exit code; what is
// not success is said on stderr.
int finish_job(HiveClient& client, ProgressView& view, const FollowResult& result,
               const std::string& job_id, const std::string& cancelled_hint, bool as_json) {
  view.close(result.terminal == "[DONE]"        ? ""
             : result.terminal == "[CANCELLED]" ? "cancelled"
                                                : "failed");
  if (result.terminal == "[DONE]" && !as_json) {
    std::cout << "Done: " << terminal_safe(result.last_info.empty() ? job_id : result.last_info)
              << '\n';
    if (!result.installed.empty()) {
      try {
        const std::string id = result.installed.substr(0, result.installed.find(':'));
        const json model = client.get("/v1/models/" + id);
        if (model.contains("path") && model["path"].is_string())
          std::cout << terminal_safe(model["path"].get<std::string>()) << '\n';
      } catch (const ClientError&) {
        // The job succeeded; only the path could not be asked for (the hive stopped, say).
      }
    }
  }
  return exit_code_of(result, job_id, cancelled_hint);
}

// A word as a POSIX shell reads it back: as it is when it is plain, else single-quoted.
std::string shell_word(const std::string& word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("-_./:=@%+,", c);
  });
  if (plain) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The pull that repeats this one (the same file, revision and globs), to resume it.
std::string pull_command(const OperatorOptions& options) {
  std::string command = "rbee-hive pull " + shell_word(options.model);
  if (!options.revision.empty()) command += " --revision " + shell_word(options.revision);
  for (const auto& glob : options.include) command += " --include " + shell_word(glob);
  for (const auto& glob : options.exclude) command += " --exclude " + shell_word(glob);
  if (options.hive_url != kDefaultHiveUrl) command += " --hive " + shell_word(options.hive_url);
  return command;
}

// Columns padded to their widest cell, two spaces apart, a header first.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i)
      line += i + 1 == row.size() ? row[i] : fmt::format("{:<{}}  ", row[i], widths[i]);
    std::cout << terminal_safe(line) << '\n';
  }
}

// `--json`: the API's answer as it came; otherwise the table (header first), or `empty` when
// it has no rows.
int print_listing(const json& answer, bool as_json,
                  const std::vector<std::vector<std::string>>& rows, const std::string& empty) {
  if (as_json) {
    std::cout << terminal_json(answer) << '\n';
  } else if (rows.size() <= 1) {
    std::cout << empty << '\n';
  } else {
    print_table(rows);
  }
  return 0;
}

std::string text_or(const json& value, const char* key, std::string fallback = "") {
  return value.contains(key) && value[key].is_string() ? value[key].get<std::string>() : fallback;
}

std::string age(const json& unix_ms) {
  if (!unix_ms.is_number()) return "-";
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return short_duration(static_cast<double>(now - unix_ms.get<std::int64_t>()) / 1000) + " ago";
}

// Runs a command body, turning a ClientError into its message on stderr.
int guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const ClientError& error) {
    std::cerr << "rbee-hive: " << terminal_safe(error.what()) << '\n';
    return kExitFailed;
  }
}

}  // namespace

OperatorCommands::OperatorCommands(CLI::App& app) {
  // No envname: CLI11 would apply RBEE_HIVE_URL through the other subcommands' --hive after
  // this one's flag. run() falls back to the environment only when no flag was given.
  auto add_hive_option = [this](CLI::App* command) {
    command->add_option(
        "--hive", options_.hive_url,
        fmt::format("URL of the hive (default: $RBEE_HIVE_URL, else {})", kDefaultHiveUrl));
  };
  pull_ = app.add_subcommand("pull", "Download a model on a hive and show its progress");
  pull_->add_option("model", options_.model, "org/name, or org/name:path/in/repo for one file")
      ->required();
  pull_->add_option("--revision", options_.revision, "Branch, tag or commit (default main)");
  pull_->add_option("--include", options_.include, "Only files matching this glob (repeatable)");
  pull_->add_option("--exclude", options_.exclude, "Skip files matching this glob (repeatable)");
  pull_
      ->add_option("--connections", options_.connections,
                   "Connections per large file for this job (1-64; default: the hive's)")
      ->check(CLI::Range(1, 64));

  pull_->add_flag("--json", options_.json, "Print each event as a JSON line (no bars)");

  watch_ = app.add_subcommand("watch", "Show a job's events from the start, live, to its end");
  watch_->add_option("job_id", options_.id, "The job's id (job-...)")->required();
  watch_->add_flag("--json", options_.json, "Print each event as a JSON line (no bars)");

  jobs_ = app.add_subcommand("jobs", "List the jobs a hive holds");
  jobs_->add_flag("--json", options_.json, "Print the API's JSON");

  cancel_ = app.add_subcommand("cancel", "Cancel a job (part files stay for resume)");
  cancel_->add_option("job_id", options_.id, "The job's id (job-...)")->required();

  models_ = app.add_subcommand("models", "List, show or remove models in a hive's catalog");
  models_->add_flag("--json", options_.json, "Print the API's JSON");
  CLI::App* models_list = models_->add_subcommand("list", "List the catalog (the default)");
  models_get_ = models_->add_subcommand("get", "Show one model with its files");
  models_get_->add_option("id", options_.id, "org/name")->required();
  models_rm_ = models_->add_subcommand("rm", "Delete a model's files and catalog entry");
  models_rm_->add_option("id", options_.id, "org/name")->required();
  models_->require_subcommand(0, 1);
  // `models list --json --hive URL`: the options of `models` work after its own subcommands.
  for (CLI::App* command : {models_list, models_get_, models_rm_}) command->fallthrough();

  for (CLI::App* command : {pull_, watch_, jobs_, cancel_, models_}) add_hive_option(command);
  if (const char* token = std::getenv("RBEE_API_TOKEN")) options_.token = token;
}

std::optional<int> OperatorCommands::run() {
  if (options_.hive_url.empty()) {
    const char* from_environment = std::getenv("RBEE_HIVE_URL");
    options_.hive_url = from_environment && *from_environment ? from_environment : kDefaultHiveUrl;
  }
  if (pull_->parsed()) return guarded([this] { return pull(); });
  if (watch_->parsed()) return guarded([this] { return watch(); });
  if (jobs_->parsed()) return guarded([this] { return jobs(); });
  if (cancel_->parsed()) return guarded([this] { return cancel(); });
  if (models_get_->parsed()) return guarded([this] { return models_get(); });
  if (models_rm_->parsed()) return guarded([this] { return models_rm(); });
  if (models_->parsed()) return guarded([this] { return models_list(); });
  return std::nullopt;
}

int OperatorCommands::pull() {
  HiveClient client(options_.hive_url, options_.token);
  json job = {{"operation", "model_download"}, {"hive_id", "localhost"}, {"model", options_.model}};
  if (!options_.revision.empty()) job["revision"] = options_.revision;
  if (!options_.include.empty()) job["include"] = options_.include;
  if (!options_.exclude.empty()) job["exclude"] = options_.exclude;
  if (options_.connections > 0) job["connections"] = options_.connections;

  // With --json, stdout carries the events alone; the client's own notes go to stderr.
  ProgressView view(options_.json ? std::cerr : std::cout, options_.json ? 0 : terminal_width());
  std::atomic<bool> stopping{false};
  std::string job_id;
  std::mutex job_mutex;  // job_id is set once the hive accepted the job
  InterruptWatcher interrupts([&] {
    std::lock_guard lock(job_mutex);
    stopping = true;
    if (job_id.empty()) std::_Exit(kExitInterrupted);  // nothing submitted yet
    view.note(fmt::format("Cancelling {}...", job_id));
    try {
      client.cancel(job_id);  // the stream then ends with [CANCELLED]
    } catch (const ClientError& error) {
      view.note(error.what());
      client.abort();
    }
  });
  {
    std::lock_guard lock(job_mutex);
    job_id = client.submit(job).at("job_id").get<std::string>();
  }
  if (!options_.json) {
    view.note(fmt::format("Pulling {} on {} as {} (Ctrl+C cancels)", options_.model, client.url(),
                          job_id));
  }
  FollowResult result;
  {
    Repainter repainter(view);
    result = follow_job(client, job_id, view, stopping, options_.json);
  }
  return finish_job(
      client, view, result, job_id,
      fmt::format("; its part files stay in the cache; resume with: {}", pull_command(options_)),
      options_.json);
}

int OperatorCommands::watch() {
  HiveClient client(options_.hive_url, options_.token);
  // With --json, stdout carries the events alone; the client's own notes go to stderr.
  ProgressView view(options_.json ? std::cerr : std::cout, options_.json ? 0 : terminal_width());
  std::atomic<bool> stopping{false};
  InterruptWatcher interrupts([&] {
    stopping = true;
    client.abort();
  });
  FollowResult result;
  try {
    Repainter repainter(view);
    result = follow_job(client, options_.id, view, stopping, options_.json);
  } catch (const ClientError&) {
    view.close();
    if (!stopping) throw;
    std::cerr << fmt::format("rbee-hive: stopped watching {}; the job goes on\n", options_.id);
    return kExitInterrupted;
  }
  return finish_job(client, view, result, options_.id, "", options_.json);
}

int OperatorCommands::jobs() {
  const json answer = HiveClient(options_.hive_url, options_.token).get("/v1/jobs");
  std::vector<std::vector<std::string>> rows = {
      {"JOB", "OPERATION", "TARGET", "STATE", "CREATED", "ERROR"}};
  for (const auto& job : answer.value("jobs", json::array())) {
    const json request = job.value("request", json::object());
    rows.push_back({text_or(job, "job_id"), text_or(job, "operation"),
                    text_or(request, "model", text_or(request, "id", "-")), text_or(job, "state"),
                    age(job.value("created_at_ms", json())), text_or(job, "error", "")});
  }
  return print_listing(answer, options_.json, rows, "No jobs on " + options_.hive_url);
}

int OperatorCommands::cancel() {
  HiveClient(options_.hive_url, options_.token).cancel(options_.id);
  std::cout << fmt::format("Cancelled {}; its part files stay for resume\n", options_.id);
  return 0;
}

int OperatorCommands::models_list() {
  const json answer = HiveClient(options_.hive_url, options_.token).get("/v1/models");
  std::vector<std::vector<std::string>> rows = {
      {"MODEL", "STATUS", "SIZE", "DONE", "COMMIT", "ERROR"}};
  for (const auto& model : answer.value("models", json::array())) {
    rows.push_back({text_or(model, "id"), text_or(model, "status"),
                    format_bytes(model.value("bytes_total", std::uint64_t{0})),
                    fmt::format("{:.0f}%", 100 * model.value("progress", 0.0)),
                    text_or(model, "commit").substr(0, 12), text_or(model, "error")});
  }
  return print_listing(answer, options_.json, rows,
                       "No models in the catalog of " + options_.hive_url);
}

int OperatorCommands::models_get() {
  const json model = HiveClient(options_.hive_url, options_.token).get("/v1/models/" + options_.id);
  if (options_.json) {
    std::cout << terminal_json(model) << '\n';
    return 0;
  }
  std::vector<std::vector<std::string>> fields;
  for (const auto& [label, value] : std::initializer_list<std::pair<const char*, std::string>>{
           {"id:", text_or(model, "id")},
           {"status:", text_or(model, "status")},
           {"size:", format_bytes(model.value("bytes_total", std::uint64_t{0}))},
           {"revision:", text_or(model, "revision")},
           {"commit:", text_or(model, "commit")},
           {"path:", text_or(model, "path")},
           {"error:", text_or(model, "error")}}) {
    if (!value.empty()) fields.push_back({label, value});  // an empty field says nothing
  }
  print_table(fields);
  std::vector<std::vector<std::string>> rows = {{"", "FILE", "SIZE", "STATE"}};
  for (const auto& file : model.value("files", json::array())) {
    rows.push_back({"", text_or(file, "path"), format_bytes(file.value("size", std::uint64_t{0})),
                    text_or(file, "state")});
  }
  std::cout << '\n';
  print_table(rows);
  return 0;
}

int OperatorCommands::models_rm() {
  HiveClient client(options_.hive_url, options_.token);
  const std::string job_id =
      client.submit({{"operation", "model_delete"}, {"hive_id", "localhost"}, {"id", options_.id}})
          .at("job_id")
          .get<std::string>();
  std::ostringstream quiet;  // the deletion's narration only matters when it fails
  ProgressView view(quiet, 0);
  const std::atomic<bool> stopping{false};
  const FollowResult result = follow_job(client, job_id, view, stopping);
  if (result.terminal == "[DONE]") std::cout << "Removed " << options_.id << '\n';
  return exit_code_of(result, job_id, "");
}

}  // namespace rbee::cli
