// End to end: the real rbee-hive binary, driven over HTTP only.

#include <rbee/catalog/model_catalog.hpp>

#include "e2e/helpers.hpp"

using namespace rbee::testing;
using nlohmann::json;

namespace {

void seed_model(const std::filesystem::path& cache, const std::string& id) {
  rbee::catalog::ModelCatalog catalog(cache);
  rbee::catalog::ModelEntry entry;
  entry.id = rbee::catalog::parse_model_id(id);
  entry.status = rbee::catalog::ModelStatus::ready;
  entry.bytes_done = entry.bytes_total = 5;
  // A model as the store keeps it: the blob, the snapshot's link to it, the ref, the entry.
  const std::string blob(40, 'e'), commit(40, 'c');
  entry.commit = commit;
  entry.refs["main"] = commit;
  entry.files = {{"weights.gguf", 5, "", blob, "verified", ""}};
  entry.files[0].blob = (model_dir(cache, id) / "blobs" / blob).string();
  entry.revisions = {{commit, rbee::catalog::ModelStatus::ready, 5, "", entry.files, 0}};
  catalog.put(entry);
  write_text(model_dir(cache, id) / "blobs" / blob, "12345");
  std::filesystem::create_directories(model_dir(cache, id) / "snapshots" / commit);
  std::filesystem::create_symlink("../../blobs/" + blob,
                                  model_dir(cache, id) / "snapshots" / commit / "weights.gguf");
  write_text(model_dir(cache, id) / "refs" / "main", commit);
}

std::vector<std::string> files_under(const std::filesystem::path& root) {
  std::vector<std::string> files;
  for (auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("health answers 200 with status ok") {
  HiveUnderTest hive;
  const json health = get_json(*hive.hive, "/health");
  CHECK(health["status"] == "ok");
}

TEST_CASE("model_list answers 202 with a job id and streams narration, data and [DONE]") {
  HiveUnderTest hive;
  seed_model(hive.cache, "org/one");
  auto res = hive->submit({{"operation", "model_list"}, {"hive_id", "localhost"}});
  REQUIRE(res);
  CHECK(res->status == 202);
  const json accepted = json::parse(res->body);
  const std::string job_id = accepted["job_id"];
  CHECK(job_id.starts_with("job-"));
  CHECK(accepted["sse_url"] == "/v1/jobs/" + job_id + "/stream");

  const SseStream stream = watch(*hive.hive, job_id);
  CHECK(stream.status == 200);
  CHECK(stream.content_type == "text/event-stream");
  const auto events = stream.events();
  REQUIRE(events.size() >= 3);
  for (std::size_t i = 0; i < events.size(); ++i) CHECK(events[i].id == i + 1);
  CHECK(events.front().json()["type"] == "narration");
  CHECK(events.front().json()["job_id"] == job_id);
  bool saw_data = false;
  for (const auto& event : events) {
    if (event.is_terminal() || event.json()["type"] != "data") continue;
    saw_data = true;
    const json payload = event.json()["payload"];
    REQUIRE(payload["models"].size() == 1);
    CHECK(payload["models"][0]["id"] == "org/one");
    CHECK(payload["models"][0]["status"] == "ready");
  }
  CHECK(saw_data);
  CHECK(stream.terminal() == "[DONE]");
  CHECK(get_json(*hive.hive, "/v1/jobs/" + job_id)["state"] == "completed");
}

TEST_CASE("model_get streams the entry, an unknown model fails the job with a reason") {
  HiveUnderTest hive;
  seed_model(hive.cache, "org/one");
  auto stream =
      watch(*hive.hive, hive->submit_job({{"operation", "model_get"}, {"id", "org/one"}}));
  CHECK(stream.terminal() == "[DONE]");
  bool found = false;
  for (const auto& event : stream.events()) {
    if (!event.is_terminal() && event.json()["type"] == "data") {
      found = event.json()["payload"]["model"]["files"][0]["path"] == "weights.gguf";
    }
  }
  CHECK(found);

  const std::string missing = hive->submit_job({{"operation", "model_get"}, {"id", "org/none"}});
  CHECK(watch(*hive.hive, missing).terminal() == "[ERROR] model org/none is not in the catalog");
  const json job = get_json(*hive.hive, "/v1/jobs/" + missing);
  CHECK(job["state"] == "failed");
  CHECK(job["error"] == "model org/none is not in the catalog");
}

TEST_CASE("model_delete removes the folder and the entry") {
  HiveUnderTest hive;
  seed_model(hive.cache, "org/one");
  REQUIRE(std::filesystem::exists(model_file(hive.cache, "org/one", "weights.gguf")));
  auto stream =
      watch(*hive.hive, hive->submit_job({{"operation", "model_delete"}, {"id", "org/one"}}));
  CHECK(stream.terminal() == "[DONE]");
  CHECK_FALSE(std::filesystem::exists(model_dir(hive.cache, "org/one")));
  CHECK(get_json(*hive.hive, "/v1/models")["models"].empty());
}

TEST_CASE(
    "bad requests get a 4xx JSON error, create no job, write no file, and the hive serves on") {
  HiveUnderTest hive;
  const auto files_before = files_under(hive.cache);
  struct Case {
    std::string name;
    std::string body;
    std::string content_type = "application/json";
    int status = 400;
    std::string code;
  };
  const std::string big(1024 * 1024 + 10, ' ');
  const std::vector<Case> cases = {
      {"invalid JSON", "{\"operation\":", "application/json", 400, "invalid_json"},
      {"array", "[1,2]", "application/json", 400, "invalid_json"},
      {"scalar", "\"model_list\"", "application/json", 400, "invalid_json"},
      {"missing operation", R"({"model":"org/name"})", "application/json", 400, "missing_field"},
      {"unknown operation", R"({"operation":"make_coffee"})", "application/json", 400,
       "unknown_operation"},
      {"missing model", R"({"operation":"model_download"})", "application/json", 400,
       "missing_field"},
      {"empty model", R"({"operation":"model_download","model":""})", "application/json", 400,
       "missing_field"},
      {"traversal model", R"({"operation":"model_download","model":"../x"})", "application/json",
       400, "invalid_model_id"},
      {"absolute model", R"({"operation":"model_download","model":"/etc"})", "application/json",
       400, "invalid_model_id"},
      {"three-part model", R"({"operation":"model_download","model":"a/b/c"})", "application/json",
       400, "invalid_model_id"},
      {"huge model",
       json({{"operation", "model_download"}, {"model", std::string(10000, 'a')}}).dump(),
       "application/json", 400, "invalid_model_id"},
      {"control bytes in model",
       json({{"operation", "model_download"}, {"model", "org/na\x01me"}}).dump(),
       "application/json", 400, "invalid_model_id"},
      {"traversal file", R"({"operation":"model_download","model":"org/n:../../etc/passwd"})",
       "application/json", 400, "invalid_path"},
      {"control bytes in revision",
       json({{"operation", "model_download"}, {"model", "org/n"}, {"revision", "ma\nin"}}).dump(),
       "application/json", 400, "invalid_revision"},
      {"traversal in revision",
       json({{"operation", "model_download"}, {"model", "org/n"}, {"revision", "../main"}}).dump(),
       "application/json", 400, "invalid_revision"},
      {"a hidden part in revision (a file under refs/)",
       json({{"operation", "model_download"}, {"model", "org/n"}, {"revision", "v1/./x"}}).dump(),
       "application/json", 400, "invalid_revision"},
      {"a revision to delete that git would refuse",
       json({{"operation", "model_delete"}, {"id", "org/n"}, {"revision", "../main"}}).dump(),
       "application/json", 400, "invalid_revision"},
      {"revision over 255 bytes",
       json({{"operation", "model_download"},
             {"model", "org/n"},
             {"revision", std::string(256, 'a')}})
           .dump(),
       "application/json", 400, "invalid_revision"},
      {"hostile id", R"({"operation":"model_get","id":"../../etc"})", "application/json", 400,
       "invalid_model_id"},
      {"missing id", R"({"operation":"model_delete"})", "application/json", 400, "missing_field"},
      {"body over 1 MiB", "{\"operation\":\"model_list\"}" + big, "application/json", 413,
       "payload_too_large"},
      {"wrong content type", R"({"operation":"model_list"})", "text/plain", 415,
       "unsupported_media_type"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto res = hive->client()->Post("/v1/jobs", c.body, c.content_type.c_str());
    REQUIRE(res);
    CHECK(res->status == c.status);
    CHECK(res->get_header_value("Content-Type") == "application/json");
    const json error = json::parse(res->body, nullptr, false);
    REQUIRE_FALSE(error.is_discarded());
    CHECK(error["error"]["code"] == c.code);
    CHECK_FALSE(error["error"]["message"].get<std::string>().empty());
  }
  CHECK(get_json(*hive.hive, "/v1/jobs")["jobs"].empty());
  CHECK(files_under(hive.cache) == files_before);
  CHECK(get_json(*hive.hive, "/health")["status"] == "ok");
}

TEST_CASE("unknown job ids answer 404 JSON on get, stream and delete") {
  HiveUnderTest hive;
  auto client = hive->client();
  for (const std::string method : {"GET", "GET-stream", "DELETE"}) {
    CAPTURE(method);
    auto res = method == "DELETE"       ? client->Delete("/v1/jobs/job-nope")
               : method == "GET-stream" ? client->Get("/v1/jobs/job-nope/stream")
                                        : client->Get("/v1/jobs/job-nope");
    REQUIRE(res);
    CHECK(res->status == 404);
    CHECK(json::parse(res->body)["error"]["code"] == "job_not_found");
  }
  auto unknown_route = client->Get("/v2/whatever");
  REQUIRE(unknown_route);
  CHECK(unknown_route->status == 404);
  CHECK(json::parse(unknown_route->body)["error"]["code"] == "not_found");
}

TEST_CASE("a bad Last-Event-ID answers 400 JSON") {
  HiveUnderTest hive;
  const std::string job_id = hive->submit_job({{"operation", "model_list"}});
  watch(*hive.hive, job_id);  // let it finish
  for (std::string bad : {"abc", "-1", "1.5", "99999", "1 2"}) {
    CAPTURE(bad);
    const SseStream stream = watch(*hive.hive, job_id, {{"Last-Event-ID", bad}});
    CHECK(stream.status == 400);
    CHECK(json::parse(stream.error_body)["error"]["code"] == "invalid_last_event_id");
  }
}

TEST_CASE("with an API token, every route but /health needs it") {
  const std::string token = "tok-0123456789abcdef";
  HiveUnderTest hive({"--api-token", token}, token);
  httplib::Client anonymous("127.0.0.1", hive->port());
  CHECK(anonymous.Get("/health")->status == 200);
  for (const std::string path : {"/v1/jobs", "/v1/models", "POST /v1/jobs"}) {
    CAPTURE(path);
    auto res = path.starts_with("POST")
                   ? anonymous.Post("/v1/jobs", R"({"operation":"model_list"})", "application/json")
                   : anonymous.Get(path);
    REQUIRE(res);
    CHECK(res->status == 401);
    CHECK(json::parse(res->body)["error"]["code"] == "unauthorized");
  }
  httplib::Client wrong("127.0.0.1", hive->port());
  wrong.set_bearer_token_auth("tok-0123456789abcdeX");
  CHECK(wrong.Get("/v1/jobs")->status == 401);

  const std::string job_id = hive->submit_job({{"operation", "model_list"}});
  const SseStream unauthorized_stream = watch(*hive.hive, job_id);
  CHECK(unauthorized_stream.status == 401);
  const SseStream stream = watch(*hive.hive, job_id, {{"Authorization", "Bearer " + token}});
  CHECK(stream.terminal() == "[DONE]");
  CHECK(get_json(*hive.hive, "/v1/jobs")["jobs"].size() == 1);  // the 401s created nothing
  CHECK(hive->log().find(token) == std::string::npos);
}

TEST_CASE("with a token, the dashboard page is public and a stream ticket opens one job's stream") {
  const std::string token = "tok-0123456789abcdef";
  HiveUnderTest hive({"--api-token", token}, token);
  httplib::Client anonymous("127.0.0.1", hive->port());
  const auto page = anonymous.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Content-Type") == "text/html; charset=utf-8");
  CHECK(page->get_header_value("Content-Security-Policy").find("default-src 'none'") !=
        std::string::npos);
  CHECK(page->body.find("<title>rbee-hive</title>") != std::string::npos);

  const std::string job_id = hive->submit_job({{"operation", "model_list"}});
  const std::string other_job = hive->submit_job({{"operation", "model_list"}});
  const std::string ticket_path = "/v1/jobs/" + job_id + "/stream-ticket";
  CHECK(anonymous.Post(ticket_path, "", "application/json")->status == 401);
  const auto issued = hive->client()->Post(ticket_path, "", "application/json");
  REQUIRE(issued);
  REQUIRE(issued->status == 200);
  const json ticket = json::parse(issued->body);
  CHECK(ticket["expires_in_s"] == 60);
  CHECK(ticket["stream_url"] ==
        "/v1/jobs/" + job_id + "/stream?ticket=" + ticket["ticket"].get<std::string>());

  const auto stream = read_sse({hive->port(), ticket["stream_url"].get<std::string>(), {}, {}});
  CHECK(stream.terminal() == "[DONE]");
  const auto elsewhere =
      read_sse({hive->port(),
                "/v1/jobs/" + other_job + "/stream?ticket=" + ticket["ticket"].get<std::string>(),
                {},
                {}});
  CHECK(elsewhere.status == 401);  // a ticket opens its own job's stream only
  CHECK(anonymous.Get("/v1/jobs?ticket=" + ticket["ticket"].get<std::string>())->status == 401);
  CHECK(hive->client()->Post("/v1/jobs/job-nope/stream-ticket", "", "application/json")->status ==
        404);
}

TEST_CASE("the catalog is served as JSON, a corrupted entry shows as failed with the reason") {
  HiveUnderTest hive;
  seed_model(hive.cache, "org/good");
  write_text(model_dir(hive.cache, "org/broken") / "metadata.yaml", "schema: 1\nid: \"org/bro");
  const json models = get_json(*hive.hive, "/v1/models")["models"];
  REQUIRE(models.size() == 2);
  CHECK(models[0]["id"] == "org/broken");
  CHECK(models[0]["status"] == "failed");
  CHECK(models[0]["error"].get<std::string>().find("unreadable") != std::string::npos);
  CHECK(models[1]["status"] == "ready");

  CHECK(get_json(*hive.hive, "/v1/models/org/good")["files"][0]["path"] == "weights.gguf");
  CHECK(get_json(*hive.hive, "/v1/models/org/absent", 404)["error"]["code"] == "model_not_found");
  CHECK(get_json(*hive.hive, "/v1/models/org/a..b", 400)["error"]["code"] == "invalid_model_id");
  CHECK(get_json(*hive.hive, "/health")["status"] == "ok");
}

TEST_CASE("a known path asked with another method answers 405 with Allow, not 404") {
  HiveUnderTest hive;
  auto client = hive->client();
  const auto put = client->Put("/v1/jobs", "{}", "application/json");
  REQUIRE(put);
  CHECK(put->status == 405);
  CHECK(put->get_header_value("Allow") == "GET, HEAD, POST");
  CHECK(json::parse(put->body)["error"]["code"] == "method_not_allowed");
  const auto post = client->Post("/v1/jobs/job-1", "{}", "application/json");
  REQUIRE(post);
  CHECK(post->status == 405);
  CHECK(post->get_header_value("Allow") == "GET, HEAD, DELETE");
  const auto del = client->Delete("/health");
  REQUIRE(del);
  CHECK(del->status == 405);
  CHECK(del->get_header_value("Allow") == "GET, HEAD");
  const auto unknown = client->Put("/v2/nothing", "{}", "application/json");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  // Every route still answers the methods it allows.
  CHECK(client->Get("/v1/jobs")->status == 200);
  CHECK(client->Get("/health")->status == 200);
  CHECK(client->Get("/v1/jobs/job-1")->status == 404);  // its own 404: no such job
}
