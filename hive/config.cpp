#include "rbee/hive/config.hpp"

#include <pwd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace rbee::hive {
namespace {

std::filesystem::path home_folder() {
  if (const char* home = std::getenv("HOME"); home && *home) return home;
  if (const passwd* entry = ::getpwuid(::getuid()); entry && entry->pw_dir) return entry->pw_dir;
  throw std::invalid_argument("cannot find the home folder: set HOME or --cache-dir");
}

}  // namespace

void add_config_options(CLI::App& app, HiveConfig& config) {
  app.add_option("--bind", config.bind, "Address to listen on (default 127.0.0.1)")
      ->envname("HIVE_BIND");
  app.add_option("--port", config.port, "Port to listen on (default 7835)")
      ->envname("HIVE_PORT")
      ->check(CLI::Range(0, 65535));
  app.add_option("--cache-dir", config.cache_dir,
                 "Model cache and catalog root (default ~/.cache/rbee/models)")
      ->envname("RBEE_CACHE_DIR");
  app.add_option("--api-token", config.api_token,
                 "Bearer token required on every route but /health")
      ->envname("RBEE_API_TOKEN");
  app.add_option_function<std::string>(
         "--log-level",
         [&config](const std::string& text) { config.log_level = narration::parse_level(text); },
         "debug, info, warn or error (default info)")
      ->envname("RBEE_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  app.add_option("--max-concurrent-jobs", config.max_concurrent_jobs,
                 "Jobs that run at once; the rest wait queued (default 4)")
      ->envname("RBEE_MAX_CONCURRENT_JOBS")
      ->check(CLI::Range(1, 256));
  app.add_option("--max-connections", config.max_connections,
                 "HTTP connections open at once, SSE watchers included (default 1024)")
      ->envname("RBEE_MAX_CONNECTIONS")
      ->check(CLI::Range(8, 16384));
  app.add_option("--max-connections-per-client", config.max_connections_per_client,
                 "HTTP connections open at once from one client address (default 512)")
      ->envname("RBEE_MAX_CONNECTIONS_PER_CLIENT")
      ->check(CLI::Range(1, 16384));
  app.add_option_function<int>(
         "--request-head-timeout-ms",
         [&config](int ms) { config.head_timeout = std::chrono::milliseconds(ms); },
         "A request's whole head must arrive within this (default 10000)")
      ->check(CLI::Range(100, 600000));
  app.add_option("--allowed-host", config.allowed_hosts,
                 "A Host name served without an API token besides 127.0.0.1, localhost and [::1] "
                 "(repeatable), e.g. the name of a reverse proxy")
      ->envname("RBEE_ALLOWED_HOSTS")
      ->delimiter(',');
  app.add_option("--max-queued-jobs", config.max_queued_jobs,
                 "Jobs queued or running at once; more are answered 429 (default 1000)")
      ->envname("RBEE_MAX_QUEUED_JOBS")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--max-events-per-job", config.retention.max_events_per_job,
                 "Events kept per job for replay; progress is compacted first (default 10000)")
      ->check(CLI::Range(16, 10000000));
  app.add_option("--max-listing-files", config.listing.max_entries,
                 "Files a Hub listing may hold; a larger one is refused (default 250000)")
      ->envname("RBEE_MAX_LISTING_FILES")
      ->check(CLI::Range(1, 100000000));
  app.add_option_function<std::size_t>(
         "--max-listing-mb", [&config](std::size_t mb) { config.listing.max_bytes = mb << 20; },
         "MiB a Hub listing may take, after any decompression (default 64)")
      ->envname("RBEE_MAX_LISTING_MB")
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-stream-tickets", config.max_stream_tickets,
                 "Unexpired stream tickets held at once (default 10000)")
      ->check(CLI::Range(1, 1000000));
  app.add_option_function<int>(
         "--sse-heartbeat-ms",
         [&config](int ms) { config.sse_heartbeat = std::chrono::milliseconds(ms); },
         "Interval of ': ping' comments on idle streams (default 15000)")
      ->check(CLI::Range(10, 600000));
  app.add_option("--max-finished-jobs", config.retention.max_finished_jobs,
                 "Finished jobs kept for GET /v1/jobs and replay (default 1000)")
      ->check(CLI::Range(1, 1000000));
  auto& downloads = config.downloads;
  app.add_option_function<std::uint64_t>(
         "--disk-reserve-mb",
         [&downloads](std::uint64_t mb) { downloads.disk_reserve_bytes = mb << 20; },
         "Disk space (MiB) a download must leave free (default 1024)")
      ->envname("RBEE_DISK_RESERVE_MB");
  app.add_option("--keep-revisions", downloads.keep_unnamed_revisions,
                 "Revisions no ref names kept after a download moves a ref, newest first; every "
                 "revision a ref names always stays (default 1: the one before)")
      ->envname("RBEE_KEEP_REVISIONS")
      ->check(CLI::Range(0, 1000));
  app.add_option("--max-concurrent-downloads", downloads.max_concurrent_downloads,
                 "Downloads that run at once; more wait queued (default 2)")
      ->envname("RBEE_MAX_CONCURRENT_DOWNLOADS")
      ->check(CLI::Range(1, 64));
  app.add_option("--download-attempts", downloads.download.max_attempts,
                 "Failed attempts in a row (without progress) before a file gives up (default 6)")
      ->check(CLI::Range(1, 100));
  app.add_option_function<int>(
         "--retry-base-ms",
         [&downloads](int ms) { downloads.download.backoff_base = std::chrono::milliseconds(ms); },
         "First retry delay; doubles per failure, with jitter (default 500)")
      ->check(CLI::Range(1, 60000));
  app.add_option_function<int>(
         "--stall-timeout-ms",
         [&downloads](int ms) { downloads.download.stall_timeout = std::chrono::milliseconds(ms); },
         "A connection that delivers under 16 KiB in this time is resumed anew (default 30000)")
      ->check(CLI::Range(100, 600000));
  app.add_option("--connections", downloads.download.connections,
                 "Most connections per download, each fetching a byte range of a large file; the "
                 "hive finds\n"
                 "its own count below this ceiling; 1 turns ranges off (default 32)")
      ->envname("RBEE_CONNECTIONS")
      ->check(CLI::Range(1, 64));
  app.add_flag_function(
         "--fixed-connections",
         [&downloads](std::int64_t) { downloads.download.adaptive_connections = false; },
         "Use exactly --connections per large file instead of finding the count (default off)")
      ->envname("RBEE_FIXED_CONNECTIONS");
  app.add_option_function<std::string>(
         "--xet",
         [&downloads](const std::string& mode) { downloads.download.xet = mode == "auto"; },
         "auto: files the Hub keeps in Xet storage come from its chunk store, reusing chunks\n"
         "already on disk; off: always through the Hub's resolve bridge (default auto)")
      ->envname("RBEE_XET")
      ->check(CLI::IsMember({"auto", "off"}));
  app.add_option("--parallel-files", downloads.parallel_files,
                 "Files of one download fetched at once (default 16)")
      ->envname("RBEE_PARALLEL_FILES")
      ->check(CLI::Range(1, 64));
  app.add_option("--max-download-connections", downloads.max_download_connections,
                 "Download connections open at once across all jobs (default 64)")
      ->envname("RBEE_MAX_DOWNLOAD_CONNECTIONS")
      ->check(CLI::Range(1, 1024));
  app.add_option_function<std::uint64_t>(
         "--min-range-mb",
         [&downloads](std::uint64_t mb) { downloads.download.min_range_bytes = mb << 20; },
         "Smallest byte range per connection (MiB); files under twice this use one (default 16)")
      ->check(CLI::Range(1, 4096));
  app.add_option_function<int>(
         "--progress-interval-ms",
         [&downloads](int ms) { downloads.progress_interval = std::chrono::milliseconds(ms); },
         "Cadence of progress narration and catalog progress writes (default 1000)")
      ->check(CLI::Range(50, 60000));
  app.add_option("--mirror-pull-through", config.mirror.pull_through,
                 "The /hf mirror fetches what this hive lacks from HF_ENDPOINT, as model_download "
                 "jobs (default true)")
      ->envname("RBEE_MIRROR_PULL_THROUGH");
  app.add_flag("--offline", downloads.offline,
               "Serve and download from the cache only; never contact a Hub (default off)")
      ->envname("RBEE_OFFLINE");
  app.add_option("--fallback-endpoint", config.fallback_endpoints,
                 "A Hub tried after HF_ENDPOINT when that cannot list a model (unreachable, 5xx); "
                 "repeatable, in order. Its token, if any, comes from RBEE_FALLBACK_TOKENS "
                 "(comma-separated, by position)")
      ->envname("RBEE_FALLBACK_ENDPOINTS")
      ->delimiter(',');
  app.add_option_function<int>(
         "--finished-job-ttl-s",
         [&config](int s) { config.retention.max_finished_age = std::chrono::seconds(s); },
         "Seconds a finished job is kept (default 3600)")
      ->check(CLI::Range(1, 30 * 24 * 3600));
}

bool is_loopback_address(const std::string& host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

std::size_t fit_descriptor_limit(HiveConfig& config) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
  }
  const auto descriptors = static_cast<std::size_t>(
      std::min<rlim_t>(limit.rlim_cur, std::numeric_limits<std::size_t>::max()));
  // Downloads, part files, sidecars, catalog writes and the epoll loop keep a quarter (at least
  // 256 descriptors) that connections can never take.
  const std::size_t reserve = std::max<std::size_t>(256, descriptors / 4);
  const std::size_t for_connections = descriptors > reserve + 8 ? descriptors - reserve : 8;
  config.max_connections = std::min(config.max_connections, for_connections);
  config.max_connections_per_client =
      std::min(config.max_connections_per_client, config.max_connections);
  return descriptors;
}

namespace {

// A cache folder the hive cannot create or write would let it start, say /health ok, and fail
// the first download: refuse it now, with the reason.
void check_cache_dir_usable(const std::filesystem::path& folder) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) {
    throw std::invalid_argument(fmt::format("cannot use the cache folder {} (--cache-dir): {}",
                                            folder.string(), ec.message()));
  }
  std::string probe = (folder / ".rbee-write-test.XXXXXX").string();
  const int fd = ::mkstemp(probe.data());
  if (fd < 0) {
    throw std::invalid_argument(fmt::format("cannot write in the cache folder {} (--cache-dir): {}",
                                            folder.string(), std::strerror(errno)));
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace

void finalize_config(HiveConfig& config) {
  if (config.cache_dir.empty()) config.cache_dir = home_folder() / ".cache" / "rbee" / "models";
  config.mirror.offline = config.downloads.offline;
  config.mirror.requests_authenticated = !config.api_token.empty();
  for (auto& endpoint : config.fallback_endpoints) {
    while (endpoint.ends_with('/')) endpoint.pop_back();
    if (!endpoint.starts_with("http://") && !endpoint.starts_with("https://")) {
      throw std::invalid_argument(fmt::format(
          "--fallback-endpoint must be an http:// or https:// URL, not '{}'", endpoint));
    }
  }
  config.cache_dir = std::filesystem::absolute(config.cache_dir);
  check_cache_dir_usable(config.cache_dir);
  if (!is_loopback_address(config.bind) && config.api_token.empty()) {
    throw std::invalid_argument(fmt::format(
        "refusing to listen on {} without an API token: anyone who can reach it could start "
        "downloads; set --api-token or RBEE_API_TOKEN",
        config.bind));
  }
}

}  // namespace rbee::hive
