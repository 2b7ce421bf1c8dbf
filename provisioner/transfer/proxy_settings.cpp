#include "rbee/provisioner/proxy_settings.hpp"

#include <cstdlib>

#include <fmt/format.h>

namespace rbee::provisioner {
namespace {

std::string first_set(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value && *value) return value;
  }
  return "";
}

std::string with_scheme(std::string proxy) {
  if (!proxy.empty() && proxy.find("://") == std::string::npos) proxy = "http://" + proxy;
  return proxy;
}

// The "user:password" of a proxy URL, or "" when it has none.
std::string_view userinfo_of(std::string_view url) {
  const auto scheme_end = url.find("://");
  const auto start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  const auto authority_end = url.find_first_of("/?#", start);
  const auto authority =
      url.substr(start, authority_end == std::string_view::npos ? std::string_view::npos
                                                                : authority_end - start);
  const auto at = authority.rfind('@');
  return at == std::string_view::npos ? std::string_view() : authority.substr(0, at);
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

}  // namespace

std::string ProxySettings::for_scheme(std::string_view scheme) const {
  return scheme == "https" ? https : http;
}

std::vector<std::string> ProxySettings::secrets() const {
  std::vector<std::string> found;
  for (const std::string* proxy : {&http, &https}) {
    const std::string_view userinfo = userinfo_of(*proxy);
    if (userinfo.empty()) continue;
    found.emplace_back(userinfo);
    // libcurl may quote the user name alone, or the password alone; a part of one or two
    // characters is left, or every such letter of a text would be starred.
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) continue;
    for (const auto part : {userinfo.substr(colon + 1), userinfo.substr(0, colon)}) {
      if (part.size() >= 3) found.emplace_back(part);
    }
  }
  return found;
}

std::string ProxySettings::redact(std::string text) const {
  for (const auto& secret : secrets()) replace_all(text, secret, "***");
  return text;
}

std::string ProxySettings::describe() const {
  if (http.empty() && https.empty()) return "no proxy";
  return fmt::format("https via {}, http via {}{}",
                     https.empty() ? "direct" : redact_url_credentials(https),
                     http.empty() ? "direct" : redact_url_credentials(http),
                     no_proxy.empty() ? "" : ", direct for " + no_proxy);
}

ProxySettings proxy_settings_from_environment() {
  ProxySettings proxies;
  const std::string all = first_set({"all_proxy", "ALL_PROXY"});
  proxies.https = with_scheme(first_set({"https_proxy", "HTTPS_PROXY"}));
  if (proxies.https.empty()) proxies.https = with_scheme(all);
  proxies.http = with_scheme(first_set({"http_proxy", "HTTP_PROXY"}));
  if (proxies.http.empty()) proxies.http = with_scheme(all);
  proxies.no_proxy = first_set({"no_proxy", "NO_PROXY"});
  return proxies;
}

std::string redact_url_credentials(std::string_view url) {
  const std::string_view userinfo = userinfo_of(url);
  if (userinfo.empty()) return std::string(url);
  const auto at = url.find(userinfo);
  return fmt::format("{}***{}", url.substr(0, at), url.substr(at + userinfo.size()));
}

}  // namespace rbee::provisioner
