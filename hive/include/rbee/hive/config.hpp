#pragma once
// HiveConfig: every setting of the daemon, from flags, then environment, then defaults.

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>
#include <rbee/jobs/job_registry.hpp>
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
  std::size_t max_connections = 1024;  // HTTP threads; each SSE watcher holds one
  std::chrono::milliseconds sse_heartbeat{15000};
  jobs::RetentionPolicy retention;
  provisioner::ProvisionerSettings downloads;
};

// Registers the daemon's flags (each with its environment variable) on `app`, writing into
// `config`. Call finalize_config after app.parse().
void add_config_options(CLI::App& app, HiveConfig& config);

// Fills defaults that depend on the environment and checks the whole; throws
// std::invalid_argument with an operator's sentence when the settings cannot work.
void finalize_config(HiveConfig& config);

bool is_loopback_address(const std::string& host);

}  // namespace rbee::hive
