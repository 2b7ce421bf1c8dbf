#pragma once
// HubClient: the Hugging Face Hub's read API, as DESIGN §5 describes it: repo listings, file
// resolution with redirects that never carry the token to another host, and typed errors.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include <map>

#include <rbee/catalog/model_id.hpp>

#include "rbee/provisioner/listing.hpp"
#include "rbee/provisioner/proxy_settings.hpp"

namespace rbee::provisioner {

class ConnectionPool;

struct HubSettings {
  std::string endpoint = "https://huggingface.co";  // no trailing '/'
  std::string token;                                // empty: anonymous
  std::string ca_bundle;  // a PEM file to verify HTTPS with; empty: the system's CA store
  ProxySettings proxies;
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds read_timeout{30};
  ListingLimits listing;
};

// HF_ENDPOINT (trailing '/' dropped), then the token from HF_TOKEN, HUGGING_FACE_HUB_TOKEN, or
// the file $HF_HOME/token (HF_HOME defaults to ~/.cache/huggingface), RBEE_CA_BUNDLE, and the
// proxies (proxy_settings_from_environment).
HubSettings hub_settings_from_environment();

enum class HubErrorKind {
  repo_not_found,  // missing, or private without a token that may see it
  gated,           // gated: access must be requested on the Hub
  revision_not_found,
  entry_not_found,  // the file is not in the repo at that revision
  unauthorized,     // the token was refused
  forbidden,        // 403, e.g. an expired signed URL
  rate_limited,     // 429
  server_error,     // 408 and 5xx
  network,          // connect/read failures, timeouts
  protocol,         // an answer that breaks the protocol (bad JSON, too many redirects…)
};

std::string_view to_string(HubErrorKind kind);

bool is_redirect(int status);  // 301, 302, 303, 307, 308

class HubError : public std::runtime_error {
 public:
  HubError(HubErrorKind kind, const std::string& message, int status = 0,
           std::optional<std::chrono::seconds> retry_after = std::nullopt)
      : std::runtime_error(message), kind_(kind), status_(status), retry_after_(retry_after) {}
  HubErrorKind kind() const { return kind_; }
  int status() const { return status_; }
  std::optional<std::chrono::seconds> retry_after() const { return retry_after_; }
  // Worth another attempt: network trouble, rate limits, server errors.
  bool retryable() const;

 private:
  HubErrorKind kind_;
  int status_;
  std::optional<std::chrono::seconds> retry_after_;
};

// An absolute http(s) URL split into what an HTTP client needs.
struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;
  int port = 0;
  std::string target;          // path and query
  std::string origin() const;  // scheme://host:port
};
std::optional<Url> parse_url(const std::string& text);
// Where a redirect's Location points from `base`: an absolute http(s) URL, or a path on the
// same origin ("/..."). nullopt for anything else (scheme-relative, relative paths, garbage).
std::optional<Url> resolve_location(const Url& base, std::string_view location);

// Where a file's bytes are, after the Hub's redirects.
struct ResolvedFile {
  Url url;
  bool send_token = false;  // only when the URL is on the endpoint's own origin
  std::string commit;       // X-Repo-Commit, when the Hub said
  std::string xet_hash;     // X-Xet-Hash (64 hex digits): the file is in Xet storage (§15)
};

// Read access to Xet storage for one repo at one revision (DESIGN §15). The access token goes
// to the CAS only: never to the Hub, never to a transfer URL.
struct XetAccess {
  std::string access_token;
  std::chrono::system_clock::time_point expires;
  Url cas;  // casUrl
};

// Request headers, by name.
using HttpHeaders = std::multimap<std::string, std::string>;

// Thread-safe: every call opens its own connections, or leases them from the pool it is given.
class HubClient {
 public:
  explicit HubClient(HubSettings settings);
  const HubSettings& settings() const { return settings_; }

  // GET {ep}/api/models/{repo}/revision/{rev}?blobs=true, following redirects by hand (a
  // renamed repo answers 307; the token goes only to the endpoint's origin), the body capped
  // at settings().listing.max_bytes after any decompression, then parse_listing(). Throws
  // HubError. `stop` aborts the request in flight at once (a Hub that never answers, or
  // drips its headers, is not waited for); the caller sees a HubError and checks `stop`.
  RepoInfo model_info(const catalog::ModelId& repo, const std::string& revision,
                      std::stop_token stop = {}) const;
  // HEAD {ep}/{repo}/resolve/{rev}/{path}, following at most 10 redirects by hand. Throws HubError.
  // {ep}/{repo}/resolve/{rev}/{path}, where the Hub serves a regular file itself.
  Url resolve_url(const catalog::ModelId& repo, const std::string& revision,
                  const std::string& path) const;
  // Its HEAD requests reuse `pool`'s connections when given; `stop` aborts them at once.
  ResolvedFile resolve(const catalog::ModelId& repo, const std::string& revision,
                       const std::string& path, ConnectionPool* pool = nullptr,
                       std::stop_token stop = {}) const;

  // GET {ep}/api/models/{repo}/xet-read-token/{rev} with the Hub token, never redirected (the
  // Hub token stays on its origin). Throws HubError.
  XetAccess xet_read_token(const catalog::ModelId& repo, const std::string& revision,
                           std::stop_token stop = {}) const;

  // The headers of every request: the token only when `send_token` (never after a cross-host
  // redirect).
  HttpHeaders headers_for(bool send_token) const;

 private:
  HubSettings settings_;
  Url endpoint_;
};

// The HubError for an HTTP answer that is not a success (status + X-Error-Code + Retry-After),
// with a message an operator can act on.
HubError hub_error_for(int status, const std::string& error_code, const std::string& what,
                       const std::string& retry_after, bool had_token);

// Percent-encodes one path segment or a whole revision ("refs/pr/1" → "refs%2Fpr%2F1").
std::string percent_encode(const std::string& text, bool keep_slashes);

}  // namespace rbee::provisioner
