#pragma once
// A hive whose HF_ENDPOINT is the local Hub fixture, and helpers to read download streams.

#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "e2e/helpers.hpp"
#include "hub_fixture/hub_fixture.hpp"

namespace rbee::testing {

// Fast retries and progress so fault tests finish in moments; the defaults are for real networks.
// No disk reserve: tests must not depend on how full the machine's disk is.
inline std::vector<std::string> fast_flags(std::vector<std::string> more = {}) {
  std::vector<std::string> flags = {"--retry-base-ms",        "5",  "--stall-timeout-ms", "500",
                                    "--progress-interval-ms", "100"};
  if (std::find(more.begin(), more.end(), "--stall-timeout-ms") != more.end()) {
    flags.erase(flags.begin() + 2, flags.begin() + 4);  // the caller's stall timeout instead
  }
  if (std::find(more.begin(), more.end(), "--disk-reserve-mb") == more.end()) {
    more.insert(more.end(), {"--disk-reserve-mb", "0"});
  }
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

struct HiveWithHub {
  HubFixture hub;
  HiveUnderTest hive;

  explicit HiveWithHub(std::vector<std::string> flags = fast_flags(),
                       std::map<std::string, std::string> env = {})
      : hive(std::move(flags), "", with_endpoint(hub, std::move(env))) {}

  static std::map<std::string, std::string> with_endpoint(const HubFixture& hub,
                                                          std::map<std::string, std::string> env) {
    env["HF_ENDPOINT"] = hub.endpoint();
    return env;
  }
  SseStream download(const nlohmann::json& request) const {
    nlohmann::json body = request;
    body["operation"] = "model_download";
    return watch(*hive.hive, hive->submit_job(body));
  }
  YAML::Node catalog_entry(const std::string& id) const {
    return YAML::LoadFile((model_dir(hive.cache, id) / "metadata.yaml").string());
  }
  // GETs of file content (not the API) that reached `listener` for files named `file`.
  std::vector<RecordedRequest> content_gets(const std::string& listener,
                                            const std::string& file = "") const {
    std::vector<RecordedRequest> gets;
    for (const auto& r : hub.requests()) {
      const bool content =
          r.path.find("/resolve/") != std::string::npos || r.path.starts_with("/blobs/");
      if (r.listener == listener && r.method == "GET" && content &&
          (file.empty() || r.path.ends_with("/" + file) || listener == "cdn")) {
        gets.push_back(r);
      }
    }
    return gets;
  }
};

// config.json, tokenizer/tokenizer.json and model.Q4_K_M.gguf (2 MiB + 3, LFS).
inline FixtureRepo tiny_repo(const std::string& id) {
  FixtureRepo repo;
  repo.id = id;
  repo.files = {{"config.json", 613, false, 11},
                {"tokenizer/tokenizer.json", 4099, false, 12},
                {"model.Q4_K_M.gguf", 2 * 1024 * 1024 + 3, true, 13}};
  return repo;
}

inline std::vector<std::string> actions(const SseStream& stream) {
  std::vector<std::string> result;
  for (const auto& event : stream.events()) {
    if (!event.is_terminal()) result.push_back(event.json().value("action", ""));
  }
  return result;
}

inline bool has_action(const SseStream& stream, const std::string& action) {
  const auto all = actions(stream);
  return std::find(all.begin(), all.end(), action) != all.end();
}

inline std::string stream_text(const SseStream& stream) {
  std::string text;
  for (const auto& line : data_lines(stream)) text += line + "\n";
  return text;
}

}  // namespace rbee::testing
