#pragma once
// Helpers shared by the end-to-end tests: a hive on a temp cache, JSON calls, stream watching,
// and a way to hold a job running.

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>
#include <rbee/catalog/file_lock.hpp>

#include <memory>
#include <optional>
#include <thread>

#include "support/hive_process.hpp"
#include "support/sse_client.hpp"
#include "support/temp_dir.hpp"

namespace rbee::testing {

struct HiveUnderTest {
  TempDir dir;
  std::filesystem::path cache = dir / "models";
  std::unique_ptr<HiveProcess> hive;

  explicit HiveUnderTest(std::vector<std::string> args = {}, std::string api_token = "",
                         std::map<std::string, std::string> env = {}) {
    std::filesystem::create_directories(cache);
    // Never the developer's own Hugging Face token file (~/.cache/huggingface/token).
    env.try_emplace("HF_HOME", (dir / "hf-home").string());
    hive = std::make_unique<HiveProcess>(
        HiveOptions{cache, std::move(args), std::move(env), std::move(api_token)});
  }
  HiveProcess* operator->() const { return hive.get(); }
};

// The model's folder in the cache, as the Hugging Face cache names it: models--org--name.
inline std::filesystem::path model_dir(const std::filesystem::path& cache, std::string_view id) {
  std::string folder = "models--" + std::string(id);
  if (const auto slash = folder.find('/'); slash != std::string::npos) {
    folder.replace(slash, 1, "--");
  }
  return cache / folder;
}

// Where a worker finds `file` of the model now: in the snapshot folder the catalog's `path`
// names (the revision its ref names). A path that does not exist while there is none.
inline std::filesystem::path model_file(const std::filesystem::path& cache, std::string_view id,
                                        std::string_view file) {
  const auto folder = model_dir(cache, id);
  std::filesystem::path snapshot = folder / "snapshots" / "none";
  try {
    const auto entry = YAML::LoadFile((folder / "metadata.yaml").string());
    if (entry["path"]) snapshot = entry["path"].as<std::string>();
  } catch (const std::exception&) {
    // No entry yet (or a test's own garbage): no snapshot to look in.
  }
  return snapshot / std::string(file);
}

// The blob the catalog entry records for the file at `path` (verified files only keep their
// bytes there until their revision is whole and linked); a path that does not exist without one.
inline std::filesystem::path blob_of(const YAML::Node& entry, const std::string& path) {
  for (const auto& file : entry["files"]) {
    if (file["path"].as<std::string>() == path) return file["blob"].as<std::string>();
  }
  return "/nonexistent";
}

// The hive's working file of a one-file model with this extension (".part", or ".ranges" for
// the sidecar of a ranged download), in <model>/.rbee/; a path that does not exist while there
// is none.
inline std::filesystem::path working_file(const std::filesystem::path& model_dir,
                                          std::string_view extension) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir / ".rbee", ec)) {
    if (entry.path().extension() == extension) return entry.path();
  }
  return model_dir / ".rbee" / ("none" + std::string(extension));
}

// Bytes in the model's part files (one per file still downloading); 0 without any. Summed, so
// a second file's empty part never hides the first one's bytes.
inline std::uint64_t part_bytes(const std::filesystem::path& model_dir) {
  std::error_code ec;
  std::uint64_t bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir / ".rbee", ec)) {
    if (entry.path().extension() != ".part") continue;
    const auto size = std::filesystem::file_size(entry.path(), ec);
    bytes += ec ? 0 : size;
  }
  return bytes;
}

// Waits (up to 20 s) until the model's part file has at least `bytes`.
inline bool wait_for_part(const std::filesystem::path& model_dir, std::uint64_t bytes) {
  for (int i = 0; i < 2000; ++i) {
    if (part_bytes(model_dir) >= bytes) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

inline nlohmann::json get_json(const HiveProcess& hive, const std::string& path,
                               int expected = 200) {
  auto res = hive.client()->Get(path);
  REQUIRE(res);
  CHECK_MESSAGE(res->status == expected, path << " -> " << res->status << " " << res->body);
  CHECK(res->get_header_value("Content-Type") == "application/json");
  return nlohmann::json::parse(res->body);
}

inline SseStream watch(const HiveProcess& hive, const std::string& job_id,
                       httplib::Headers headers = {},
                       std::function<bool(const SseMessage&)> on_message = {}) {
  return read_sse(
      {hive.port(), "/v1/jobs/" + job_id + "/stream", std::move(headers), std::move(on_message)});
}

inline std::string wait_for_state(const HiveProcess& hive, const std::string& job_id,
                                  const std::string& state) {
  std::string seen;
  for (int i = 0; i < 1000 && seen != state; ++i) {
    seen = get_json(hive, "/v1/jobs/" + job_id).at("state").get<std::string>();
    if (seen != state) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return seen;
}

// Holds the catalog lock of a model, as another hive process writing it would: a model_delete
// job for that model runs (after narrating "Deleting …") and waits until release() is called.
class ModelLockHolder {
 public:
  ModelLockHolder(const std::filesystem::path& cache, const std::string& org,
                  const std::string& name)
      : lock_(std::in_place, cache / ".locks" / ("models--" + org + "--" + name) / "catalog.lock") {
  }
  void release() { lock_.reset(); }

 private:
  std::optional<catalog::FileLock> lock_;
};

// Submits model_delete for a held model and waits until the job is running and blocked.
inline std::string start_blocked_job(const HiveProcess& hive, const std::string& model) {
  const std::string job_id = hive.submit_job({{"operation", "model_delete"}, {"id", model}});
  REQUIRE(wait_for_state(hive, job_id, "running") == "running");
  return job_id;
}

inline std::vector<std::string> data_lines(const SseStream& stream) {
  std::vector<std::string> lines;
  for (const auto& event : stream.events()) lines.push_back(event.data);
  return lines;
}

}  // namespace rbee::testing
