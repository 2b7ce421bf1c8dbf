#include "rbee/provisioner/hub_client.hpp"

#include "rbee/provisioner/connection_pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace rbee::provisioner {
namespace {

constexpr int kMaxRedirects = 10;

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

std::string trim(std::string text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  const auto last = text.find_last_not_of(" \t\r\n");
  return first == std::string::npos ? "" : text.substr(first, last - first + 1);
}

std::string read_token_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string token;
  std::getline(in, token);
  return trim(token);
}

std::optional<std::chrono::seconds> parse_retry_after(const std::string& value) {
  if (value.empty()) return std::nullopt;
  char* end = nullptr;
  const long seconds = std::strtol(value.c_str(), &end, 10);
  // HTTP dates are allowed too; they are rare from the Hub, and then the backoff decides.
  if (end == value.c_str() || *end != '\0' || seconds < 0) return std::nullopt;
  return std::chrono::seconds(std::min(seconds, 3600L));
}

// A stop that came before a request was in flight aborted nothing (cpp-httplib's stop() only
// shuts a socket in use): without this check, a Hub that drips its headers would hold the
// thread for the whole read timeout. The caller sees the stop token and reports a cancel.
void throw_if_stopped(const std::stop_token& stop) {
  if (stop.stop_requested()) throw HubError(HubErrorKind::network, "cancelled");
}

}  // namespace

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

std::string_view to_string(HubErrorKind kind) {
  switch (kind) {
    case HubErrorKind::repo_not_found:
      return "repo_not_found";
    case HubErrorKind::gated:
      return "gated_repo";
    case HubErrorKind::revision_not_found:
      return "revision_not_found";
    case HubErrorKind::entry_not_found:
      return "entry_not_found";
    case HubErrorKind::unauthorized:
      return "unauthorized";
    case HubErrorKind::forbidden:
      return "forbidden";
    case HubErrorKind::rate_limited:
      return "rate_limited";
    case HubErrorKind::server_error:
      return "server_error";
    case HubErrorKind::network:
      return "network_error";
    case HubErrorKind::protocol:
      return "protocol_error";
  }
  return "hub_error";
}

bool HubError::retryable() const {
  return kind_ == HubErrorKind::network || kind_ == HubErrorKind::rate_limited ||
         kind_ == HubErrorKind::server_error;
}

HubSettings hub_settings_from_environment() {
  HubSettings settings;
  settings.endpoint = env_or("HF_ENDPOINT", settings.endpoint);
  while (settings.endpoint.ends_with('/')) settings.endpoint.pop_back();
  settings.token = env_or("HF_TOKEN", env_or("HUGGING_FACE_HUB_TOKEN", ""));
  if (settings.token.empty()) {
    const std::string home = env_or("HOME", "");
    const std::string hf_home = env_or("HF_HOME", home.empty() ? "" : home + "/.cache/huggingface");
    if (!hf_home.empty())
      settings.token = read_token_file(std::filesystem::path(hf_home) / "token");
  }
  settings.ca_bundle = env_or("RBEE_CA_BUNDLE", "");
  return settings;
}

std::optional<Url> resolve_location(const Url& base, std::string_view location) {
  constexpr std::size_t kMaxLocation = 8192;
  if (location.empty() || location.size() > kMaxLocation) return std::nullopt;
  const bool printable = std::all_of(location.begin(), location.end(), [](char c) {
    return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
  });
  if (!printable) return std::nullopt;
  if (location.front() == '/') {
    if (location.starts_with("//")) return std::nullopt;  // scheme-relative: another host
    Url next = base;
    next.target = std::string(location);
    return next;
  }
  return parse_url(std::string(location));
}

std::string Url::origin() const {
  return fmt::format("{}://{}:{}", scheme, host, port);
}

std::optional<Url> parse_url(const std::string& text) {
  Url url;
  const auto scheme_end = text.find("://");
  if (scheme_end == std::string::npos) return std::nullopt;
  url.scheme = text.substr(0, scheme_end);
  for (char& c : url.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (url.scheme != "http" && url.scheme != "https") return std::nullopt;
  const auto host_start = scheme_end + 3;
  const auto path_start = text.find('/', host_start);
  std::string authority = text.substr(
      host_start, path_start == std::string::npos ? std::string::npos : path_start - host_start);
  url.target = path_start == std::string::npos ? "/" : text.substr(path_start);
  if (authority.empty() || authority.find('@') != std::string::npos) return std::nullopt;
  url.port = url.scheme == "https" ? 443 : 80;
  if (const auto colon = authority.rfind(':');
      colon != std::string::npos && authority.find(']') == std::string::npos) {
    url.port = std::atoi(authority.c_str() + colon + 1);
    authority.resize(colon);
  }
  for (char& c : authority) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  url.host = authority;
  if (url.host.empty() || url.port <= 0 || url.port > 65535) return std::nullopt;
  return url;
}

std::string percent_encode(const std::string& text, bool keep_slashes) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slashes && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

HubError hub_error_for(int status, const std::string& error_code, const std::string& what,
                       const std::string& retry_after, bool had_token) {
  const auto retry = parse_retry_after(retry_after);
  if (error_code == "GatedRepo") {
    return HubError(HubErrorKind::gated,
                    fmt::format("{} is gated: request access on the Hub's model page, then set "
                                "HF_TOKEN to a token of the account that has it",
                                what),
                    status);
  }
  if (error_code == "RepoNotFound" || (status == 401 && error_code.empty() && !had_token)) {
    return HubError(HubErrorKind::repo_not_found,
                    fmt::format("{} was not found, or it is private{}", what,
                                had_token ? " and the token cannot see it"
                                          : ": set HF_TOKEN if you have access"),
                    status);
  }
  if (error_code == "RevisionNotFound") {
    return HubError(HubErrorKind::revision_not_found, fmt::format("{}: revision not found", what),
                    status);
  }
  if (error_code == "EntryNotFound") {
    return HubError(HubErrorKind::entry_not_found,
                    fmt::format("{}: file not found in the repo", what), status);
  }
  if (status == 401) {
    return HubError(HubErrorKind::unauthorized,
                    fmt::format("{}: the Hub refused the token (check HF_TOKEN)", what), status);
  }
  if (status == 403)
    return HubError(HubErrorKind::forbidden, fmt::format("{}: forbidden (403)", what), status);
  if (status == 404) {
    return HubError(HubErrorKind::repo_not_found, fmt::format("{} was not found (404)", what),
                    status);
  }
  if (status == 429) {
    return HubError(HubErrorKind::rate_limited,
                    fmt::format("{}: rate limited by the Hub (429)", what), status, retry);
  }
  if (status == 408 || status >= 500) {
    return HubError(HubErrorKind::server_error, fmt::format("{}: server error ({})", what, status),
                    status, retry);
  }
  return HubError(HubErrorKind::protocol,
                  fmt::format("{}: unexpected HTTP status {}", what, status), status);
}

HubClient::HubClient(HubSettings settings) : settings_(std::move(settings)) {
  while (settings_.endpoint.ends_with('/')) settings_.endpoint.pop_back();
  auto endpoint = parse_url(settings_.endpoint);
  if (!endpoint) {
    throw HubError(HubErrorKind::protocol,
                   fmt::format("HF_ENDPOINT '{}' is not an http(s) URL", settings_.endpoint));
  }
  endpoint_ = *endpoint;
}

std::unique_ptr<httplib::Client> HubClient::client_for(const Url& url) const {
  auto client = std::make_unique<httplib::Client>(url.origin());
  configure(*client);
  if (url.scheme == "https") {
    client->enable_server_certificate_verification(true);
    if (!settings_.ca_bundle.empty()) client->set_ca_cert_path(settings_.ca_bundle);
  }
  return client;
}

void HubClient::configure(httplib::Client& client) const {
  client.set_connection_timeout(settings_.connect_timeout);
  client.set_read_timeout(settings_.read_timeout);
  client.set_follow_location(false);  // it would forward Authorization to other hosts
  client.set_keep_alive(true);
}

httplib::Headers HubClient::headers_for(bool send_token) const {
  httplib::Headers headers = {{"User-Agent", "rbee-hive/0.1"}};
  if (send_token && !settings_.token.empty()) {
    headers.emplace("Authorization", "Bearer " + settings_.token);
  }
  return headers;
}

RepoInfo HubClient::model_info(const catalog::ModelId& repo, const std::string& revision,
                               std::stop_token stop) const {
  const std::string what = fmt::format("model {} at revision {}", repo.str(), revision);
  const std::string target =
      fmt::format("/api/models/{}/{}/revision/{}?blobs=true", percent_encode(repo.org, false),
                  percent_encode(repo.name, false), percent_encode(revision, false));
  Url url = endpoint_;
  url.target = endpoint_.target == "/" ? target : endpoint_.target + target;
  bool send_token = true;
  for (int hop = 0; hop <= kMaxRedirects; ++hop) {
    auto client = client_for(url);
    std::stop_callback abort_on_stop(stop, [&client] { client->stop(); });
    throw_if_stopped(stop);
    int status = 0;
    std::string body;
    bool too_large = false;
    // The body is bounded as it arrives: cpp-httplib would otherwise keep all of it, and
    // inflate an unrequested gzip body without limit.
    auto res = client->Get(
        url.target, headers_for(send_token),
        [&](const httplib::Response& response) {
          status = response.status;
          return true;
        },
        [&](const char* data, std::size_t length) {
          if (status != 200) return true;  // an error's body: not kept
          if (body.size() + length > settings_.listing.max_bytes) {
            too_large = true;
            return false;
          }
          body.append(data, length);
          return true;
        });
    if (too_large) {
      throw HubError(HubErrorKind::protocol,
                     fmt::format("{}: the Hub's listing is larger than {} bytes", what,
                                 settings_.listing.max_bytes));
    }
    if (!res) {
      throw HubError(HubErrorKind::network, fmt::format("cannot reach {}: {}", url.origin(),
                                                        httplib::to_string(res.error())));
    }
    if (is_redirect(res->status)) {
      const auto next = resolve_location(url, res->get_header_value("Location"));
      if (!next) {
        throw HubError(HubErrorKind::protocol,
                       fmt::format("{}: redirect to an unusable location", what));
      }
      // A renamed repo redirects its API calls too. The token stays only on the endpoint's
      // own origin, and once dropped it is never sent again.
      send_token = send_token && next->origin() == endpoint_.origin();
      url = *next;
      continue;
    }
    if (res->status != 200) {
      throw hub_error_for(res->status, res->get_header_value("X-Error-Code"), what,
                          res->get_header_value("Retry-After"), !settings_.token.empty());
    }
    try {
      return parse_listing(body, settings_.listing);
    } catch (const HubError& error) {
      throw HubError(HubErrorKind::protocol, fmt::format("{}: {}", what, error.what()));
    }
  }
  throw HubError(HubErrorKind::protocol,
                 fmt::format("{}: more than {} redirects", what, kMaxRedirects));
}

Url HubClient::resolve_url(const catalog::ModelId& repo, const std::string& revision,
                           const std::string& path) const {
  Url url = endpoint_;
  const std::string target = fmt::format(
      "/{}/{}/resolve/{}/{}", percent_encode(repo.org, false), percent_encode(repo.name, false),
      percent_encode(revision, false), percent_encode(path, true));
  url.target = endpoint_.target == "/" ? target : endpoint_.target + target;
  return url;
}

ResolvedFile HubClient::resolve(const catalog::ModelId& repo, const std::string& revision,
                                const std::string& path, ConnectionPool* pool,
                                std::stop_token stop) const {
  ConnectionPool own_connections(*this);
  ConnectionPool& connections = pool ? *pool : own_connections;
  const std::string what = fmt::format("{}/{}", repo.str(), path);
  Url url = resolve_url(repo, revision, path);
  ResolvedFile resolved;
  resolved.send_token = true;
  for (int hop = 0; hop <= kMaxRedirects; ++hop) {
    auto client = connections.take(url);
    std::optional<httplib::Result> answer;
    {
      std::stop_callback abort_on_stop(stop, [&client] { client->stop(); });
      throw_if_stopped(stop);
      answer.emplace(client->Head(url.target, headers_for(resolved.send_token)));
    }
    auto& res = *answer;
    if (res) client.keep();  // a HEAD answer has no body: the connection is ready for more
    if (!res) {
      throw HubError(HubErrorKind::network, fmt::format("cannot reach {} for {}: {}", url.origin(),
                                                        what, httplib::to_string(res.error())));
    }
    if (res->has_header("X-Repo-Commit")) resolved.commit = res->get_header_value("X-Repo-Commit");
    if (res->status == 200) {
      resolved.url = url;
      return resolved;
    }
    if (!is_redirect(res->status)) {
      throw hub_error_for(res->status, res->get_header_value("X-Error-Code"), what,
                          res->get_header_value("Retry-After"), !settings_.token.empty());
    }
    const auto next = resolve_location(url, res->get_header_value("Location"));
    if (!next) {
      throw HubError(HubErrorKind::protocol,
                     fmt::format("{}: redirect to an unusable location", what));
    }
    url = *next;
    // The token goes only to the endpoint's own origin; never to a CDN, never downgraded.
    // Another origin (the LFS CDN's signed URL) is where the bytes are: fetch it directly.
    resolved.send_token = resolved.send_token && url.origin() == endpoint_.origin();
    if (!resolved.send_token) {
      resolved.url = url;
      return resolved;
    }
  }
  throw HubError(HubErrorKind::protocol,
                 fmt::format("{}: more than {} redirects", what, kMaxRedirects));
}

}  // namespace rbee::provisioner
