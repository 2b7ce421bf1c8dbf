// End to end: the operator commands of the real rbee-hive binary (pull, watch, jobs, cancel,
// models) against a real hive and the local Hub fixture: piped, and on a terminal inside tmux.

#include <unistd.h>

#include <cstdio>
#include <regex>

#include <fmt/format.h>

#include "e2e/hive_with_hub.hpp"

using namespace rbee::testing;
using nlohmann::json;

namespace {

std::string url_of(const HiveProcess& hive) {
  return fmt::format("http://127.0.0.1:{}", hive.port());
}

CommandResult client(const HiveWithHub& h, std::vector<std::string> args,
                     const std::map<std::string, std::string>& env = {}) {
  args.insert(args.end(), {"--hive", url_of(*h.hive.hive)});
  return run_hive_command(std::move(args), env);
}

// A private tmux server (its own socket) running one command in a 120×30 pane.
class TmuxPane {
 public:
  explicit TmuxPane(const std::string& command)
      : socket_(fmt::format("rbee-test-{}-{}", ::getpid(), next_id_++)) {
    // env -i: the pane sees only what the test gives it, never the developer's HF_* or RBEE_*.
    const std::string shell = fmt::format(
        "env -i PATH=/usr/bin:/bin TERM=xterm-256color {}; echo EXIT=$?; sleep 600", command);
    REQUIRE_MESSAGE(tmux(fmt::format("new-session -d -x 120 -y 30 '{}'", shell)) == 0,
                    "tmux must be installed (scripts/install-deps.sh installs it)");
  }
  ~TmuxPane() { tmux("kill-server"); }

  std::string capture() const {
    std::string text;
    if (FILE* pipe = ::popen(fmt::format("tmux -L {} capture-pane -p -J", socket_).c_str(), "r")) {
      char buffer[4096];
      for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;)
        text.append(buffer, n);
      ::pclose(pipe);
    }
    return text;
  }
  // Polls the pane until `pattern` appears in it (up to 30 s); returns the last capture.
  std::string wait_for(const std::string& pattern) const {
    const std::regex wanted(pattern);
    std::string text;
    for (int i = 0; i < 600; ++i) {
      text = capture();
      if (std::regex_search(text, wanted)) return text;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL("the pane never showed /" << pattern << "/; it shows:\n" << text);
    return text;
  }
  void send_keys(const std::string& keys) const { tmux("send-keys " + keys); }

 private:
  int tmux(const std::string& args) const {
    return std::system(fmt::format("tmux -L {} {} >/dev/null 2>&1", socket_, args).c_str());
  }
  static inline int next_id_ = 0;
  std::string socket_;
};

std::string pull_command(const HiveWithHub& h, const std::string& model,
                         const std::string& extra = "") {
  return fmt::format("{} pull {} --hive {} --connections 1{}", hive_binary(), model,
                     url_of(*h.hive.hive), extra);
}

}  // namespace

TEST_CASE("pull, piped, prints plain timestamped lines and exits 0 when the model is ready") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));
  const auto result = client(h, {"pull", "acme/tiny"});
  CHECK_MESSAGE(result.exit_code == 0, result.err);
  CHECK(result.out.find('\x1b') == std::string::npos);  // no escape codes off a terminal
  CHECK(std::regex_search(result.out, std::regex(R"(\n\d\d:\d\d:\d\d Downloading model\.Q4_K_M)")));
  CHECK(result.out.find("Verified model.Q4_K_M.gguf") != std::string::npos);
  CHECK(result.out.find("Done: Downloaded acme/tiny: 3 files") != std::string::npos);
  CHECK(read_text(model_file(h.hive.cache, "acme/tiny", "model.Q4_K_M.gguf")) ==
        h.hub.content("acme/tiny", "model.Q4_K_M.gguf"));

  // The last line is where the files are: the folder a worker loads.
  CHECK(result.out.ends_with(model_dir(h.hive.cache, "acme/tiny").string() + "/snapshots/" +
                             FixtureRepo{}.commit + "\n"));

  const auto again = client(h, {"pull", "acme/tiny"});
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("Done: acme/tiny is already up to date: 3 files, 2.0 MiB, nothing "
                       "downloaded") != std::string::npos);
}

TEST_CASE("--hive beats RBEE_HIVE_URL in every client command") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));
  const std::string url = url_of(*h.hive.hive);
  const std::map<std::string, std::string> elsewhere = {
      {"RBEE_HIVE_URL", fmt::format("http://127.0.0.1:{}", free_port())}};  // nobody there
  const auto pulled = run_hive_command({"pull", "acme/tiny", "--hive", url}, elsewhere);
  CHECK_MESSAGE(pulled.exit_code == 0, pulled.err);
  const std::string job_id = get_json(*h.hive.hive, "/v1/jobs")["jobs"][0]["job_id"];
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"jobs", "--hive", url},
        std::vector<std::string>{"watch", job_id, "--hive", url},
        std::vector<std::string>{"models", "--hive", url},
        std::vector<std::string>{"models", "get", "acme/tiny", "--hive", url}}) {
    CAPTURE(command[0]);
    const auto result = run_hive_command(command, elsewhere);
    CHECK_MESSAGE(result.exit_code == 0, result.err);
  }
  // cancel of a finished job reaches this hive (409 "already finished"), not the environment's.
  const auto cancelled = run_hive_command({"cancel", job_id, "--hive", url}, elsewhere);
  CHECK(cancelled.err.find("already finished") != std::string::npos);
  // Without a flag the environment is used.
  const auto from_env = run_hive_command({"jobs"}, {{"RBEE_HIVE_URL", url}});
  CHECK(from_env.exit_code == 0);
  CHECK(from_env.out.find(job_id) != std::string::npos);
}

TEST_CASE("a cancelled pull of one file says how to resume exactly that; the resume says so") {
  HiveWithHub h;
  FixtureRepo repo;
  repo.id = "acme/two";
  repo.files = {{"big.gguf", 8 * 1024 * 1024, true, 81}, {"other.gguf", 4 * 1024 * 1024, true, 82}};
  h.hub.add_repo(repo);
  h.hub.set_rate_limit(512 * 1024);
  TmuxPane pane(pull_command(h, "acme/two:big.gguf", " --revision main --include '*.gguf'"));
  pane.wait_for(R"(big\.gguf +\[=*> *\] +\d+% +[1-9])");
  pane.send_keys("C-c");
  const std::string text = pane.wait_for("EXIT=130");
  CHECK(text.find("resume with: rbee-hive pull acme/two:big.gguf --revision main --include "
                  "'*.gguf' --hive http://127.0.0.1:") != std::string::npos);
  h.hub.set_rate_limit(0);
  const auto resumed = client(h, {"pull", "acme/two:big.gguf"});
  CHECK_MESSAGE(resumed.exit_code == 0, resumed.err);
  CHECK(std::regex_search(resumed.out,
                          std::regex(R"(Resuming big\.gguf at [0-9.]+ [KM]iB of 8\.0 MiB)")));
}

TEST_CASE("pull of a missing repo exits non-zero with the reason on stderr") {
  HiveWithHub h;
  const auto result = client(h, {"pull", "acme/nothing-here"});
  CHECK(result.exit_code == 1);
  CHECK(result.err.find("failed:") != std::string::npos);
  CHECK(result.err.find("acme/nothing-here") != std::string::npos);
}

TEST_CASE("client commands say how to start a hive when none answers") {
  const auto result =
      run_hive_command({"jobs", "--hive", fmt::format("http://127.0.0.1:{}", free_port())});
  CHECK(result.exit_code == 1);
  CHECK(result.err.find("no hive answers at http://127.0.0.1:") != std::string::npos);
  CHECK(result.err.find("rbee-hive serve") != std::string::npos);
}

TEST_CASE("client commands send RBEE_API_TOKEN and explain a refused one") {
  const std::string token = "cli-token-0123456789";
  HiveUnderTest hive({"--api-token", token}, token);
  const std::string url = url_of(*hive.hive);
  CHECK(run_hive_command({"jobs", "--hive", url}, {{"RBEE_API_TOKEN", token}}).exit_code == 0);
  const auto missing = run_hive_command({"jobs", "--hive", url});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("requires an API token: set RBEE_API_TOKEN") != std::string::npos);
  const auto wrong = run_hive_command({"jobs", "--hive", url}, {{"RBEE_API_TOKEN", "nope"}});
  CHECK(wrong.err.find("refused the API token") != std::string::npos);
  CHECK(wrong.err.find("nope") == std::string::npos);  // a token is never echoed
}

TEST_CASE("jobs, watch, models list/get/rm and cancel work on a real hive") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));
  const std::string job_id =
      h.hive->submit_job({{"operation", "model_download"}, {"model", "acme/tiny"}});
  REQUIRE(wait_for_state(*h.hive.hive, job_id, "completed") == "completed");

  const auto jobs = client(h, {"jobs"});
  CHECK(jobs.exit_code == 0);
  CHECK(std::regex_search(jobs.out,
                          std::regex(job_id + R"( +model_download +acme/tiny +completed)")));
  CHECK(json::parse(client(h, {"jobs", "--json"}).out)["jobs"][0]["job_id"] == job_id);

  const auto watched = client(h, {"watch", job_id});  // a finished job replays from the start
  CHECK(watched.exit_code == 0);
  CHECK(watched.out.find("Downloading acme/tiny@main") != std::string::npos);
  // watch ends as pull does: the same sentence, then the folder a worker loads.
  CHECK(watched.out.find("Done: Downloaded acme/tiny: 3 files") != std::string::npos);
  CHECK(watched.out.ends_with(model_dir(h.hive.cache, "acme/tiny").string() + "/snapshots/" +
                              FixtureRepo{}.commit + "\n"));
  CHECK(watched.out.find("Installed acme/tiny") != std::string::npos);  // the data event, said
  CHECK(watched.out.find("\"requested\"") == std::string::npos);        // not its raw JSON
  const auto as_json = client(h, {"watch", job_id, "--json"});
  CHECK(json::parse(as_json.out.substr(0, as_json.out.find('\n'))).is_object());
  CHECK(as_json.out.ends_with("[DONE]\n"));

  const auto models = client(h, {"models"});
  CHECK(std::regex_search(models.out, std::regex(R"(acme/tiny +ready +2\.0 MiB +100%)")));
  CHECK(json::parse(client(h, {"models", "list", "--json"}).out)["models"][0]["status"] == "ready");
  const auto one = client(h, {"models", "get", "acme/tiny"});
  CHECK(one.out.find("model.Q4_K_M.gguf") != std::string::npos);
  CHECK(one.out.find("verified") != std::string::npos);
  CHECK(one.out.find("error:") == std::string::npos);  // empty fields are left out

  const auto cancel_finished = client(h, {"cancel", job_id});
  CHECK(cancel_finished.exit_code == 1);
  CHECK(cancel_finished.err.find("already finished") != std::string::npos);
  const auto cancel_unknown = client(h, {"cancel", "job-nope"});
  CHECK(cancel_unknown.err.find("no job with that id") != std::string::npos);
  const auto watch_unknown = client(h, {"watch", "job-nope"});
  CHECK(watch_unknown.exit_code == 1);
  CHECK(watch_unknown.err.find("job-nope: no job with that id") != std::string::npos);

  const auto removed = client(h, {"models", "rm", "acme/tiny"});
  CHECK_MESSAGE(removed.exit_code == 0, removed.err);
  CHECK(removed.out == "Removed acme/tiny\n");
  CHECK_FALSE(std::filesystem::exists(model_dir(h.hive.cache, "acme/tiny")));
  CHECK(client(h, {"models", "get", "acme/tiny"}).err.find("no model with that id") !=
        std::string::npos);
}

TEST_CASE("pull on a terminal draws live bars per file and a total, then the final line") {
  HiveWithHub h;
  h.hub.add_repo(tiny_repo("acme/tiny"));
  h.hub.set_rate_limit(512 * 1024);  // about 4 s for the 2 MiB file: the bars are seen moving
  TmuxPane pane(pull_command(h, "acme/tiny"));

  // One frame with the file's bar above the total's, the total with a speed.
  const std::string live = pane.wait_for(
      R"(model\.Q4_K_M\.gguf +\[=*> *\] +\d+%[\s\S]*\nTotal +\[[=> ]+\] +\d+% [^\n]*iB/s)");
  CHECK(live.find("Downloading acme/tiny@main") != std::string::npos);  // narration above bars

  const std::string done = pane.wait_for("EXIT=0");
  CHECK(std::regex_search(done, std::regex(R"(Total +\[=+\] +100%)")));
  CHECK(done.find("Done: Downloaded acme/tiny: 3 files") != std::string::npos);
  // The final Total bar and the summary give the same speed.
  std::smatch summary, total;
  REQUIRE(
      std::regex_search(done, summary, std::regex(R"(Done: Downloaded .* \(([0-9.]+ \w+/s)\))")));
  REQUIRE(
      std::regex_search(done, total, std::regex(R"(Total +\[=+\] +100% [^\n]*?([0-9.]+ \w+/s))")));
  CHECK(summary[1].str() == total[1].str());
  // The last line is the folder a worker loads.
  CHECK(done.find((model_dir(h.hive.cache, "acme/tiny")).string()) != std::string::npos);
}

TEST_CASE("Ctrl+C during pull cancels the job, keeps the part file and says how to resume") {
  HiveWithHub h;
  FixtureRepo repo;
  repo.id = "acme/slow";
  repo.files = {{"model.gguf", 8 * 1024 * 1024, true, 77}};
  h.hub.add_repo(repo);
  h.hub.set_rate_limit(512 * 1024);
  TmuxPane pane(pull_command(h, "acme/slow"));
  pane.wait_for(R"(model\.gguf +\[=*> *\] +\d+% +[1-9])");  // some bytes have arrived

  pane.send_keys("C-c");
  const std::string text = pane.wait_for("EXIT=130");
  CHECK(text.find("was cancelled") != std::string::npos);
  CHECK(text.find("resume with: rbee-hive pull acme/slow --hive http://127.0.0.1:") !=
        std::string::npos);
  // The bars stay as a record, marked: no stale ETA.
  CHECK(std::regex_search(text, std::regex(R"(Total +\[[=> ]+\] +\d+% .*cancelled)")));
  CHECK(text.find("ETA") == std::string::npos);
  CHECK(part_bytes(model_dir(h.hive.cache, "acme/slow")) > 0);
  const auto jobs = get_json(*h.hive.hive, "/v1/jobs");
  CHECK(jobs["jobs"][0]["state"] == "cancelled");
}
