#include "rbee/provisioner/hub_client.hpp"

#include "http_connection.hpp"
#include "rbee/provisioner/connection_pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace rbee::provisioner {
namespace {

constexpr int kMaxRedirects = 10;

// "org/name" as URL path segments, or just "name" for a canonical model without an owner.
std::string repo_segments(const catalog::ModelId& repo) {
  return repo.org.empty()
             ? percent_encode(repo.name, false)
             : percent_encode(repo.org, false) + "/" + percent_encode(repo.name, false);
}

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

// A request ended by the stop token, a stall or a transport error, as a HubError; the caller
// sees the stop token and reports a cancel.
[[noreturn]] void throw_transport_error(const HttpResult& result, const Url& url,
                                        std::string_view what) {
  if (result.outcome == HttpOutcome::cancelled) throw HubError(HubErrorKind::network, "cancelled");
  const std::string reason =
      result.outcome == HttpOutcome::stalled ? "no answer in time" : result.error;
  throw HubError(HubErrorKind::network, fmt::format("cannot reach {}{}{}: {}", url.origin(),
                                                    what.empty() ? "" : " for ", what, reason));
}

bool is_xet_hash(const std::string& text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
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
  settings.proxies = proxy_settings_from_environment();
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
  // An IPv6 literal keeps its brackets in the host ("[::1]"), as a URL spells it.
  const auto host_end = authority.starts_with('[') ? authority.find(']') : 0;
  if (host_end == std::string::npos) return std::nullopt;
  if (const auto colon = authority.rfind(':'); colon != std::string::npos && colon > host_end) {
    const std::string port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
    url.port = std::atoi(port.c_str());
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
                                          : ": if you have access, set HF_TOKEN in the hive's "
                                            "environment (a client's HF_TOKEN is never sent)"),
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
  if (status == 407) {
    return HubError(HubErrorKind::unauthorized,
                    fmt::format("{}: the proxy wants credentials (407); put them in the proxy "
                                "URL (http://user:password@proxy:port)",
                                what),
                    status);
  }
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

XetAccess HubClient::xet_read_token(const catalog::ModelId& repo, const std::string& revision,
                                    std::stop_token stop) const {
  const std::string what = fmt::format("Xet read token for {} at {}", repo.str(), revision);
  const std::string target = fmt::format("/api/models/{}/xet-read-token/{}", repo_segments(repo),
                                         percent_encode(revision, false));
  Url url = endpoint_;
  url.target = endpoint_.target == "/" ? target : endpoint_.target + target;
  constexpr std::size_t kMaxBody = 64 << 10;
  HttpRequest request;
  request.url = url;
  request.headers = headers_for(true);
  request.stall_timeout = settings_.read_timeout;
  request.stall_min_bytes = 1;
  HttpConnection connection(settings_);
  const auto [res, body, too_large] = connection.perform_capped(request, kMaxBody, stop);
  if (too_large) throw HubError(HubErrorKind::protocol, what + ": the answer is too large");
  if (res.outcome != HttpOutcome::complete) throw_transport_error(res, url, what);
  if (res.head.status != 200) {
    throw hub_error_for(res.head.status, res.head.header("X-Error-Code"), what,
                        res.head.header("Retry-After"), !settings_.token.empty());
  }
  // The answer holds a secret: messages say what is wrong, never what it holds.
  const auto json = nlohmann::json::parse(body, nullptr, false);
  const auto field = [&](const char* name) {
    return json.is_object() && json.contains(name) ? json[name] : nlohmann::json();
  };
  const auto token = field("accessToken"), exp = field("exp"), cas = field("casUrl");
  if (!token.is_string() || token.get<std::string>().empty() ||
      token.get<std::string>().size() > 16384 || !exp.is_number() || !cas.is_string()) {
    throw HubError(HubErrorKind::protocol, what + ": the answer lacks accessToken, exp or casUrl");
  }
  XetAccess access;
  access.access_token = token.get<std::string>();
  if (std::any_of(access.access_token.begin(), access.access_token.end(), [](unsigned char c) {
        return c < 0x20 || c == 0x7F;  // it becomes a header value
      })) {
    throw HubError(HubErrorKind::protocol, what + ": the access token is not a header value");
  }
  access.expires = std::chrono::system_clock::time_point(
      std::chrono::seconds(static_cast<std::int64_t>(std::clamp(exp.get<double>(), 0.0, 1e11))));
  auto cas_url = parse_url(cas.get<std::string>());
  if (!cas_url) throw HubError(HubErrorKind::protocol, what + ": casUrl is not an http(s) URL");
  while (cas_url->target.size() > 1 && cas_url->target.ends_with('/')) cas_url->target.pop_back();
  access.cas = *cas_url;
  return access;
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

HttpHeaders HubClient::headers_for(bool send_token) const {
  HttpHeaders headers = {{"User-Agent", "rbee-hive/0.1"}};
  if (send_token && !settings_.token.empty()) {
    headers.emplace("Authorization", "Bearer " + settings_.token);
  }
  return headers;
}

RepoInfo HubClient::model_info(const catalog::ModelId& repo, const std::string& revision,
                               std::stop_token stop) const {
  const std::string what = fmt::format("model {} at revision {}", repo.str(), revision);
  const std::string target = fmt::format("/api/models/{}/revision/{}?blobs=true",
                                         repo_segments(repo), percent_encode(revision, false));
  Url url = endpoint_;
  url.target = endpoint_.target == "/" ? target : endpoint_.target + target;
  bool send_token = true;
  HttpConnection connection(settings_);
  for (int hop = 0; hop <= kMaxRedirects; ++hop) {
    HttpRequest request;
    request.url = url;
    request.headers = headers_for(send_token);
    request.accept_compressed = true;  // listings compress well; the cap applies inflated
    request.stall_timeout = settings_.read_timeout;  // a silent server, as a read timeout
    request.stall_min_bytes = 1;
    const auto [res, body, too_large] =
        connection.perform_capped(request, settings_.listing.max_bytes, stop);
    if (too_large) {
      throw HubError(HubErrorKind::protocol,
                     fmt::format("{}: the Hub's listing is larger than {} bytes", what,
                                 settings_.listing.max_bytes));
    }
    if (res.outcome != HttpOutcome::complete) throw_transport_error(res, url, "");
    if (is_redirect(res.head.status)) {
      const auto next = resolve_location(url, res.head.header("Location"));
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
    if (res.head.status != 200) {
      throw hub_error_for(res.head.status, res.head.header("X-Error-Code"), what,
                          res.head.header("Retry-After"), !settings_.token.empty());
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
  const std::string target =
      fmt::format("/{}/resolve/{}/{}", repo_segments(repo), percent_encode(revision, false),
                  percent_encode(path, true));
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
    HttpRequest request;
    request.url = url;
    request.head = true;
    request.headers = headers_for(resolved.send_token);
    request.stall_timeout = settings_.read_timeout;  // a silent server, as a read timeout
    request.stall_min_bytes = 1;
    const HttpResult res = connections.take(url)->perform(request, stop);
    if (res.outcome != HttpOutcome::complete) throw_transport_error(res, url, what);
    if (res.head.has_header("X-Repo-Commit")) resolved.commit = res.head.header("X-Repo-Commit");
    // Only the Hub's own word marks a file as Xet, and only a well-formed hash is kept.
    if (const std::string xet = res.head.header("X-Xet-Hash");
        resolved.send_token && is_xet_hash(xet))
      resolved.xet_hash = xet;
    if (res.head.status == 200) {
      resolved.url = url;
      return resolved;
    }
    if (!is_redirect(res.head.status)) {
      throw hub_error_for(res.head.status, res.head.header("X-Error-Code"), what,
                          res.head.header("Retry-After"), !settings_.token.empty());
    }
    const auto next = resolve_location(url, res.head.header("Location"));
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
