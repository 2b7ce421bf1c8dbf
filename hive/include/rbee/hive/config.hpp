#pragma once
// HiveConfig: every setting of the daemon, from flags, then environment, then defaults.

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <rbee/jobs/job_registry.hpp>
#include <rbee/mirror/hub_mirror.hpp>
#include <rbee/narration/event.hpp>
#include <rbee/provisioner/model_provisioner.hpp>

namespace rbee::hive {

inline constexpr int kDefaultPort = 7835;

struct HiveConfig {
  std::string bind = "127.0.0.1";
  int port = kDefaultPort;          // 0 picks a free port (tests)
  std::filesystem::path cache_dir;  // default: ~/.cache/rbee/models
  std::string api_token;            // empty: no token required (loopback only)
  narration::Level log_level = narration::Level::info;
  std::size_t max_concurrent_jobs = 4;
  std::size_t max_connections = 1024;  // HTTP connections; each SSE watcher holds one
  std::size_t max_connections_per_client = 512;
  std::chrono::milliseconds head_timeout{10000};  // a whole request head must arrive in this
  std::vector<std::string> allowed_hosts;  // Host names served without a token, beyond loopback
  std::size_t max_queued_jobs = 1000;      // unfinished jobs; more are answered 429
  std::size_t max_stream_tickets = 10000;
  std::chrono::milliseconds sse_heartbeat{15000};
  jobs::RetentionPolicy retention;
  provisioner::ProvisionerSettings downloads;
  provisioner::ListingLimits listing;  // what a Hub listing may hold
  // Further Hubs after HF_ENDPOINT, in order (DESIGN §13); their tokens, by position, come from
  // RBEE_FALLBACK_TOKENS (HF_TOKEN belongs to HF_ENDPOINT alone).
  std::vector<std::string> fallback_endpoints;
  mirror::MirrorSettings mirror;  // the Hub read API under /hf; offline is downloads.offline
};

// Registers the daemon's flags (each with its environment variable) on `app`, writing into
// `config`. Call finalize_config after app.parse().
void add_config_options(CLI::App& app, HiveConfig& config);

// Fills defaults that depend on the environment and checks the whole, the cache folder
// included (created if missing, and written to once); throws std::invalid_argument with an
// operator's sentence when the settings cannot work.
void finalize_config(HiveConfig& config);

// The exit code of a start the settings refused (a bad flag or variable, a cache folder that
// cannot be used), as for any command-line usage error.
inline constexpr int kExitBadSettings = 2;

bool is_loopback_address(const std::string& host);

// Raises the soft RLIMIT_NOFILE to the hard limit and caps the connection limits below it, so
// that part files and catalog writes never meet EMFILE. Returns the descriptor limit.
std::size_t fit_descriptor_limit(HiveConfig& config);

}  // namespace rbee::hive
