// rbee-hive: the daemon (`serve`, the default), which wires narration → jobs → catalog → HTTP and
// runs until SIGINT/SIGTERM; and the operator's client commands (pull, watch, jobs, …).

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <rbee/catalog/model_catalog.hpp>
#include <rbee/catalog/schema1_migration.hpp>
#include <rbee/cli/operator_commands.hpp>
#include <rbee/hive/config.hpp>
#include <rbee/hive/hive_server.hpp>
#include <rbee/hive/model_operations.hpp>
#include <rbee/jobs/job_registry.hpp>
#include <rbee/jobs/job_router.hpp>
#include <rbee/narration/log_sink.hpp>
#include <rbee/narration/narrator.hpp>

namespace {

using namespace rbee;

// Within this after SIGTERM the process has exited, whatever its clients or the Hub do.
constexpr std::chrono::seconds kShutdownDeadline{4};

sigset_t shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

void narrate(const narration::Narrator& narrator, std::string action, std::string human,
             narration::Level level = narration::Level::info) {
  narrator.emit({"hive", std::move(action), "hive", std::move(human), "", level, 0, std::nullopt});
}

// A cache a hive before DESIGN §16 wrote moves into the Hugging Face layout, by renames, before
// anything reads it; said once, when there was something to move. False (after saying why) when
// the disk refused a step: the hive does not start on a half-read cache, and the next start
// finishes the move.
bool migrate_schema1_cache(const catalog::ModelCatalog& catalog,
                           const narration::Narrator& narrator) {
  try {
    const auto report = catalog::migrate_schema1_models(catalog);
    if (!report.models.empty()) {
      narrate(narrator, "cache_migrated",
              fmt::format("Moved {} model{} ({} file{}) into the Hugging Face cache layout by "
                          "renames; nothing was copied or downloaded",
                          report.models.size(), report.models.size() == 1 ? "" : "s", report.files,
                          report.files == 1 ? "" : "s"));
    }
    for (const auto& folder : report.leftovers) {
      narrate(narrator, "cache_migration_leftover",
              fmt::format("{} holds files no catalog entry names; left where they are",
                          (catalog.root() / folder).string()),
              narration::Level::warn);
    }
    return true;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "rbee-hive: cannot move the cache into the Hugging Face layout: %s\n",
                 error.what());
    return false;
  }
}

// The --fallback-endpoint Hubs, each like the first but for its endpoint and token: a token
// belongs to one endpoint (RBEE_FALLBACK_TOKENS, by position), never HF_TOKEN's.
std::vector<provisioner::HubClient> fallback_hubs(const hive::HiveConfig& config,
                                                  const provisioner::HubSettings& primary,
                                                  narration::Narrator& narrator) {
  std::vector<std::string> tokens;
  if (const char* listed = std::getenv("RBEE_FALLBACK_TOKENS")) {
    std::string_view rest = listed;
    for (;;) {
      const auto comma = rest.find(',');
      tokens.emplace_back(rest.substr(0, comma));
      narrator.redactor().add_secret(tokens.back());
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  std::vector<provisioner::HubClient> hubs;
  for (std::size_t i = 0; i < config.fallback_endpoints.size(); ++i) {
    provisioner::HubSettings settings = primary;
    settings.endpoint = config.fallback_endpoints[i];
    settings.token = i < tokens.size() ? tokens[i] : "";
    hubs.emplace_back(std::move(settings));
  }
  return hubs;
}

int run_daemon(hive::HiveConfig& config) {
  // Signals go to the sigwait below only: block them before any thread starts (the job
  // router's pool starts with it), or a SIGINT landing on a pool thread kills the process.
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    hive::finalize_config(config);
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "rbee-hive: %s\n", error.what());
    return hive::kExitBadSettings;
  }
  const std::size_t descriptors = hive::fit_descriptor_limit(config);

  narration::Narrator narrator;
  provisioner::HubSettings hub = provisioner::hub_settings_from_environment();
  hub.listing = config.listing;
  narrator.redactor().add_secret(config.api_token);
  narrator.redactor().add_secret(hub.token);
  for (const char* variable : {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}) {
    if (const char* token = std::getenv(variable)) narrator.redactor().add_secret(token);
  }
  // Proxy credentials are secrets too: whatever quotes a proxy URL is redacted.
  for (const auto& secret : hub.proxies.secrets()) narrator.redactor().add_secret(secret);
  narrator.add_sink(std::make_shared<narration::LogSink>(config.log_level));
  const std::string endpoint = hub.endpoint;
  const std::string proxies = hub.proxies.describe();
  const bool has_token = !hub.token.empty();

  const auto fallbacks = fallback_hubs(config, hub, narrator);

  jobs::JobRegistry registry(config.retention);
  narrator.add_sink(jobs::make_job_event_sink(registry));
  catalog::ModelCatalog catalog(config.cache_dir);
  if (!migrate_schema1_cache(catalog, narrator)) return hive::kExitBadSettings;
  provisioner::ModelProvisioner provisioner(provisioner::HubClient(std::move(hub)), catalog,
                                            narrator, config.downloads, fallbacks);
  catalog.remove_stale_temp_files();  // a killed writer's: never a document anyone reads
  if (const auto interrupted = provisioner.mark_interrupted_downloads(); interrupted > 0) {
    narrate(narrator, "downloads_interrupted",
            fmt::format("{} model{} left unfinished by an earlier run: downloads marked "
                        "interrupted (a new model_download resumes them from their part files), "
                        "deletes completed",
                        interrupted, interrupted == 1 ? "" : "s"),
            narration::Level::warn);
  }
  jobs::JobRouter router(narrator, config.max_concurrent_jobs);
  hive::register_model_operations(router, catalog, registry, provisioner);

  hive::HiveServer server(config, registry, router, catalog, provisioner, narrator);
  const int port = server.bind();
  narrate(narrator, "hive_listening",
          fmt::format("Listening on http://{}:{} (catalog {}{}; Hub {}{}; up to {} connections, "
                      "{} descriptors)",
                      config.bind, port, config.cache_dir.string(),
                      config.api_token.empty() ? "" : ", token required", endpoint,
                      has_token ? " with a token" : "", config.max_connections, descriptors));

  if (proxies != "no proxy") narrate(narrator, "hive_proxies", "Proxies: " + proxies);
  if (!fallbacks.empty()) {
    std::string listed;
    for (const auto& fallback : fallbacks) {
      listed += fmt::format("{}{}{}", listed.empty() ? "" : ", ", fallback.settings().endpoint,
                            fallback.settings().token.empty() ? "" : " (with its own token)");
    }
    narrate(narrator, "hive_fallbacks", "Fallback Hubs, in order: " + listed);
  }
  if (config.downloads.offline) {
    narrate(narrator, "hive_offline",
            "Offline: downloads and the /hf mirror use the cache only; no Hub is contacted");
  }

  std::atomic<bool> serve_failed{false};
  std::thread http([&] {
    serve_failed = !server.serve();
    if (serve_failed) ::kill(::getpid(), SIGTERM);  // wake the signal wait below
  });

  int signal = 0;
  sigwait(&signals, &signal);
  if (!serve_failed) {
    narrate(narrator, "hive_stopping",
            fmt::format("Received {}; cancelling jobs and stopping",
                        signal == SIGINT ? "SIGINT" : "SIGTERM"));
  }
  // Stopping is bounded: should a job not end (a Hub that drips bytes into a read that
  // cannot be interrupted), the process still exits; part files and the catalog are crash-safe.
  std::mutex stopped_mutex;
  std::condition_variable stopped_changed;
  bool stopped = false;
  std::thread deadline([&] {
    std::unique_lock lock(stopped_mutex);
    if (stopped_changed.wait_for(lock, kShutdownDeadline, [&] { return stopped; })) return;
    narrate(narrator, "hive_forced_exit",
            "Stopping took too long; exiting now (part files stay for resume)",
            narration::Level::error);
    std::_Exit(1);
  });
  server.shutdown();
  http.join();
  {
    std::lock_guard lock(stopped_mutex);
    stopped = true;
  }
  stopped_changed.notify_one();
  deadline.join();
  if (serve_failed) {
    narrate(narrator, "hive_failed", "The HTTP server stopped unexpectedly",
            narration::Level::error);
    return 1;
  }
  narrate(narrator, "hive_stopped", "Stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  rbee::hive::HiveConfig config;
  CLI::App app{"rbee-hive: downloads models and runs jobs for an rbee cluster", "rbee-hive"};
  app.set_version_flag("--version", RBEE_VERSION_STRING);
  // The daemon's options sit on the top level, so `rbee-hive --port N` (rbee's start scripts)
  // and `rbee-hive serve --port N` both work.
  rbee::hive::add_config_options(*app.add_option_group("Daemon options (rbee-hive [serve])"),
                                 config);
  app.add_subcommand("serve", "Run the hive daemon (the default without a subcommand)")
      ->fallthrough();
  rbee::cli::OperatorCommands operator_commands(app);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) return app.exit(error);  // --help, --version
    // One line that names the flag (or variable) and what it allows, as a usage error exits.
    std::fprintf(stderr, "rbee-hive: %s (see --help)\n", error.what());
    return rbee::hive::kExitBadSettings;
  }
  if (const auto exit_code = operator_commands.run()) return *exit_code;
  try {
    return run_daemon(config);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "rbee-hive: %s\n", error.what());
    return 1;
  }
}
