#pragma once
// ProxySettings: the HTTP(S) proxies of the environment, read the way curl and the Hub's own
// clients (huggingface_hub through requests) read them, so one configuration serves all three.
// The provisioner sets them on every request explicitly: libcurl alone would ignore
// `HTTP_PROXY` in capitals (its "httpoxy" rule), which the Hub clients honour.

#include <string>
#include <string_view>
#include <vector>

namespace rbee::provisioner {

struct ProxySettings {
  std::string http;   // proxy URL for http:// requests; "" goes direct
  std::string https;  // proxy URL for https:// requests (an http:// proxy tunnels with CONNECT)
  std::string
      no_proxy;  // hosts, domains (suffix match), IPs or CIDR ranges that go direct; "*": all

  // The proxy for a request of that scheme ("http" or "https"), before NO_PROXY applies.
  std::string for_scheme(std::string_view scheme) const;
  // `text` with the user name and password of each configured proxy replaced by "***": what
  // may appear in a log, narration, an error or the catalog.
  std::string redact(std::string text) const;
  // The credentials of the configured proxies ("user:password", the password, the user), for
  // a redactor; parts under 3 characters are left out.
  std::vector<std::string> secrets() const;
  // One line for the operator: which proxy serves which scheme, credentials redacted.
  std::string describe() const;
};

// https_proxy, HTTPS_PROXY, then all_proxy, ALL_PROXY for https; http_proxy, HTTP_PROXY, then
// all_proxy, ALL_PROXY for http; no_proxy, NO_PROXY. Lowercase wins when both are set, as in
// Python's urllib. A proxy without a scheme ("host:3128") is taken as http://.
ProxySettings proxy_settings_from_environment();

// `url` with any "user:password@" before its host replaced by "***@".
std::string redact_url_credentials(std::string_view url);

}  // namespace rbee::provisioner
