#include "rbee/cli/hive_client.hpp"

#include <charconv>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>

#include "rbee/cli/sse_parser.hpp"

namespace rbee::cli {
namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr auto kReadTimeout = std::chrono::seconds(30);
// A stream is quiet for at most one heartbeat (15 s); twice that without a byte means the hive
// or the network is gone.
constexpr auto kStreamReadTimeout = std::chrono::seconds(40);

std::string message_of(const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  if (json.is_object() && json.contains("error") && json["error"].is_object())
    return json["error"].value("message", body);
  return body.empty() ? "no details" : body;
}

}  // namespace

bool is_terminal_line(const std::string& data) {
  return data == "[DONE]" || data == "[CANCELLED]" || data.starts_with("[ERROR]");
}

HiveClient::HiveClient(std::string base_url, std::string token)
    : base_url_(std::move(base_url)), token_(std::move(token)) {
  while (base_url_.ends_with('/')) base_url_.pop_back();
}

std::unique_ptr<httplib::Client> HiveClient::make_client() const {
  auto client = std::make_unique<httplib::Client>(base_url_);
  if (!client->is_valid()) {
    throw ClientError(ClientErrorKind::protocol,
                      fmt::format("'{}' is not a hive URL (expected http://host:port)", base_url_));
  }
  client->set_connection_timeout(kConnectTimeout);
  client->set_read_timeout(kReadTimeout);
  if (!token_.empty()) client->set_bearer_token_auth(token_);
  return client;
}

void HiveClient::throw_unreachable(httplib::Error error) const {
  throw ClientError(ClientErrorKind::unreachable,
                    fmt::format("no hive answers at {} ({}): start one with 'rbee-hive serve', or "
                                "point --hive at a running hive",
                                base_url_, httplib::to_string(error)));
}

void HiveClient::throw_for_status(int status, const std::string& body,
                                  const std::string& what) const {
  if (status == 401) {
    throw ClientError(
        ClientErrorKind::unauthorized,
        token_.empty()
            ? fmt::format("the hive at {} requires an API token: set RBEE_API_TOKEN "
                          "to the token it was started with",
                          base_url_)
            : fmt::format("the hive at {} refused the API token in RBEE_API_TOKEN", base_url_));
  }
  const std::string message = message_of(body);
  if (status == 404) {
    throw ClientError(ClientErrorKind::not_found, fmt::format("{}: {}", what, message));
  }
  throw ClientError(ClientErrorKind::rejected,
                    fmt::format("{}: the hive answered {}: {}", what, status, message));
}

const httplib::Response& HiveClient::expect(const httplib::Result& result, int status,
                                            const std::string& what) const {
  if (!result) throw_unreachable(result.error());
  if (result->status != status) throw_for_status(result->status, result->body, what);
  return *result;
}

nlohmann::json HiveClient::get(const std::string& path) const {
  const auto result = make_client()->Get(path);
  const auto json = nlohmann::json::parse(expect(result, 200, "GET " + path).body, nullptr, false);
  if (json.is_discarded())
    throw ClientError(ClientErrorKind::protocol, "GET " + path + ": the answer is not JSON");
  return json;
}

nlohmann::json HiveClient::submit(const nlohmann::json& job) const {
  // Arguments from the command line may hold any bytes: never let dump() throw on them.
  const auto result =
      make_client()->Post("/v1/jobs", narration::dump_json(job), "application/json");
  const auto json =
      nlohmann::json::parse(expect(result, 202, "the job was refused").body, nullptr, false);
  if (!json.is_object() || !json.contains("job_id"))
    throw ClientError(ClientErrorKind::protocol, "the hive accepted the job but sent no job_id");
  return json;
}

nlohmann::json HiveClient::cancel(const std::string& job_id) const {
  const auto result = make_client()->Delete("/v1/jobs/" + job_id);
  return nlohmann::json::parse(expect(result, 200, "cannot cancel " + job_id).body, nullptr, false);
}

std::string HiveClient::stream(const std::string& job_id, std::uint64_t& last_id,
                               const std::function<void(const StreamMessage&)>& on_message) {
  auto client = make_client();
  client->set_read_timeout(kStreamReadTimeout);
  {
    std::lock_guard lock(streaming_mutex_);
    if (aborted_) throw ClientError(ClientErrorKind::unreachable, "stopped");
    streaming_ = client.get();
  }
  struct Unregister {
    HiveClient& owner;
    ~Unregister() {
      std::lock_guard lock(owner.streaming_mutex_);
      owner.streaming_ = nullptr;
    }
  } unregister{*this};

  httplib::Headers headers = {{"Accept", "text/event-stream"}};
  if (last_id > 0) headers.emplace("Last-Event-ID", std::to_string(last_id));
  int status = 0;
  std::string error_body, terminal, protocol_error;
  SseParser parser;
  const auto result = client->Get(
      "/v1/jobs/" + job_id + "/stream", headers,
      [&](const httplib::Response& response) {
        status = response.status;
        return true;
      },
      [&](const char* data, std::size_t length) {
        if (status != 200) {
          error_body.append(data, length);
          return true;
        }
        try {
          parser.feed({data, length}, [&](const StreamMessage& message) {
            if (message.id > 0) last_id = message.id;
            if (is_terminal_line(message.data)) terminal = message.data;
            on_message(message);
          });
        } catch (const std::length_error& error) {
          protocol_error = error.what();
          return false;
        }
        return terminal.empty();
      });
  if (!protocol_error.empty()) throw ClientError(ClientErrorKind::protocol, protocol_error);
  if (!terminal.empty()) return terminal;
  if (result && status != 200) throw_for_status(status, error_body, job_id);
  if (aborted_) throw ClientError(ClientErrorKind::unreachable, "stopped");
  throw ClientError(ClientErrorKind::unreachable,
                    fmt::format("the stream of {} from {} ended early ({})", job_id, base_url_,
                                result ? "closed" : httplib::to_string(result.error())));
}

void HiveClient::abort() {
  std::lock_guard lock(streaming_mutex_);
  aborted_ = true;
  if (streaming_) streaming_->stop();
}

}  // namespace rbee::cli
