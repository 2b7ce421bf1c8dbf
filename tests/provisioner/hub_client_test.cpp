#include <doctest/doctest.h>
#include <rbee/provisioner/hub_client.hpp>

#include "hub_fixture/hub_fixture.hpp"
#include "support/temp_dir.hpp"

using namespace rbee::provisioner;
using namespace rbee::testing;
using rbee::catalog::parse_model_id;

namespace {

HubClient client_for(const HubFixture& hub, std::string token = "") {
  HubSettings settings;
  settings.endpoint = hub.endpoint() + "/";  // a trailing slash is ignored
  settings.token = std::move(token);
  return HubClient(settings);
}

HubErrorKind error_kind(const std::function<void()>& call) {
  try {
    call();
  } catch (const HubError& error) {
    return error.kind();
  }
  FAIL("no HubError");
  return HubErrorKind::protocol;
}

FixtureRepo sample_repo() {
  FixtureRepo repo;
  repo.id = "org/model";
  repo.revisions = {"main", "refs/pr/1"};
  repo.files = {{"config.json", 100, false, 1}, {"weights.gguf", 5000, true, 2}};
  return repo;
}

}  // namespace

TEST_CASE("model_info lists the commit and siblings with their checksums") {
  HubFixture hub;
  hub.add_repo(sample_repo());
  const RepoInfo info = client_for(hub).model_info(parse_model_id("org/model"), "main");
  CHECK(info.commit == sample_repo().commit);
  REQUIRE(info.siblings.size() == 2);
  CHECK(info.siblings[0].path == "config.json");
  CHECK(info.siblings[0].lfs_sha256.empty());
  CHECK(info.siblings[0].blob_id.size() == 40);
  CHECK(info.siblings[1].lfs_sha256 == sha256_hex(hub.content("org/model", "weights.gguf")));
  CHECK(info.siblings[1].size == 5000);
}

TEST_CASE("a refs/pr revision is percent-encoded and works") {
  HubFixture hub;
  hub.add_repo(sample_repo());
  CHECK_NOTHROW(client_for(hub).model_info(parse_model_id("org/model"), "refs/pr/1"));
  CHECK(percent_encode("refs/pr/1", false) == "refs%2Fpr%2F1");
}

TEST_CASE("Hub errors map to typed, actionable errors") {
  HubFixture hub;
  hub.set_valid_token("hf_valid_token_value");
  FixtureRepo gated = sample_repo();
  gated.id = "org/gated";
  gated.access = RepoAccess::gated;
  FixtureRepo hidden = sample_repo();
  hidden.id = "org/private";
  hidden.access = RepoAccess::private_repo;
  hub.add_repo(sample_repo());
  hub.add_repo(gated);
  hub.add_repo(hidden);
  const auto anonymous = client_for(hub);
  CHECK(error_kind([&] { anonymous.model_info(parse_model_id("org/missing"), "main"); }) ==
        HubErrorKind::repo_not_found);
  CHECK(error_kind([&] { anonymous.model_info(parse_model_id("org/private"), "main"); }) ==
        HubErrorKind::repo_not_found);
  CHECK(error_kind([&] { anonymous.model_info(parse_model_id("org/gated"), "main"); }) ==
        HubErrorKind::gated);
  CHECK(error_kind([&] { anonymous.model_info(parse_model_id("org/model"), "v9"); }) ==
        HubErrorKind::revision_not_found);
  CHECK(error_kind([&] { anonymous.resolve(parse_model_id("org/model"), "main", "nope.bin"); }) ==
        HubErrorKind::entry_not_found);
  CHECK(error_kind([&] {
          client_for(hub, "hf_wrong_token_value").model_info(parse_model_id("org/model"), "main");
        }) == HubErrorKind::unauthorized);
  const auto with_token = client_for(hub, "hf_valid_token_value");
  CHECK_NOTHROW(with_token.model_info(parse_model_id("org/gated"), "main"));
  CHECK_NOTHROW(with_token.model_info(parse_model_id("org/private"), "main"));

  try {
    anonymous.model_info(parse_model_id("org/gated"), "main");
  } catch (const HubError& error) {
    CHECK(std::string(error.what()).find("request access") != std::string::npos);
  }
  try {
    anonymous.model_info(parse_model_id("org/private"), "main");
  } catch (const HubError& error) {
    CHECK(std::string(error.what()).find("HF_TOKEN") != std::string::npos);
  }
}

TEST_CASE("resolve sends LFS files to the CDN without the token, regular files stay on the Hub") {
  HubFixture hub;
  hub.add_repo(sample_repo());
  const auto client = client_for(hub, "hf_some_token_value");
  const auto lfs = client.resolve(parse_model_id("org/model"), "main", "weights.gguf");
  CHECK(lfs.url.port == hub.cdn_port());
  CHECK_FALSE(lfs.send_token);
  CHECK(lfs.commit == sample_repo().commit);
  const auto regular = client.resolve(parse_model_id("org/model"), "main", "config.json");
  CHECK(regular.url.origin() == hub.endpoint());
  CHECK(regular.send_token);
  CHECK(client.headers_for(false).count("Authorization") == 0);
  CHECK(client.headers_for(true).count("Authorization") == 1);
}

TEST_CASE("a renamed repo's relative redirect is followed and keeps the token") {
  HubFixture hub;
  FixtureRepo repo = sample_repo();
  repo.id = "neworg/model";
  repo.renamed_from = "oldorg/model";
  hub.add_repo(repo);
  const auto resolved = client_for(hub, "hf_some_token_value")
                            .resolve(parse_model_id("oldorg/model"), "main", "config.json");
  CHECK(resolved.url.target.find("/neworg/model/resolve/") == 0);
  CHECK(resolved.send_token);
}

TEST_CASE("settings come from HF_ENDPOINT, HF_TOKEN, HUGGING_FACE_HUB_TOKEN, then the token file") {
  TempDir home;
  write_text(home / "hf/token", "hf_from_file_token\n");
  ::setenv("HF_HOME", (home / "hf").c_str(), 1);
  ::setenv("HF_ENDPOINT", "http://mirror.local:8080//", 1);
  ::unsetenv("HF_TOKEN");
  ::unsetenv("HUGGING_FACE_HUB_TOKEN");
  auto settings = hub_settings_from_environment();
  CHECK(settings.endpoint == "http://mirror.local:8080");
  CHECK(settings.token == "hf_from_file_token");
  ::setenv("HUGGING_FACE_HUB_TOKEN", "hf_legacy_variable", 1);
  CHECK(hub_settings_from_environment().token == "hf_legacy_variable");
  ::setenv("HF_TOKEN", "hf_primary_variable", 1);
  CHECK(hub_settings_from_environment().token == "hf_primary_variable");
  for (const char* name : {"HF_HOME", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
    ::unsetenv(name);
  CHECK(hub_settings_from_environment().endpoint == "https://huggingface.co");
}

TEST_CASE("URLs parse into origin and target, and odd ones are refused") {
  auto url = parse_url("HTTPS://CDN.Example.com/blobs/ab?sig=1");
  REQUIRE(url);
  CHECK(url->origin() == "https://cdn.example.com:443");
  CHECK(url->target == "/blobs/ab?sig=1");
  CHECK(parse_url("http://127.0.0.1:8080")->target == "/");
  CHECK_FALSE(parse_url("ftp://x/y"));
  CHECK_FALSE(parse_url("http://user:pw@host/"));
  CHECK_FALSE(parse_url("not a url"));
  CHECK_FALSE(parse_url("http://host:80x/"));
  const auto v6 = parse_url("http://[::1]:7835/hf");
  REQUIRE(v6);
  CHECK(v6->host == "[::1]");
  CHECK(v6->port == 7835);
  CHECK(v6->origin() == "http://[::1]:7835");
  CHECK(parse_url("https://[2001:db8::1]/x")->port == 443);
  CHECK_FALSE(parse_url("http://[::1/x"));
}

TEST_CASE("proxies are read from the environment as curl and huggingface_hub read them") {
  const char* names[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                         "all_proxy",  "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
  for (const char* name : names) ::unsetenv(name);
  CHECK(proxy_settings_from_environment().for_scheme("https").empty());
  ::setenv("HTTP_PROXY", "proxy.corp:3128", 1);  // capitals, and no scheme
  ::setenv("ALL_PROXY", "http://all.corp:8080", 1);
  ::setenv("NO_PROXY", "localhost,.internal", 1);
  auto proxies = proxy_settings_from_environment();
  CHECK(proxies.for_scheme("http") == "http://proxy.corp:3128");
  CHECK(proxies.for_scheme("https") == "http://all.corp:8080");
  CHECK(proxies.no_proxy == "localhost,.internal");
  ::setenv("https_proxy", "http://lower.corp:1", 1);
  ::setenv("HTTPS_PROXY", "http://upper.corp:2", 1);
  CHECK(proxy_settings_from_environment().for_scheme("https") == "http://lower.corp:1");
  for (const char* name : names) ::unsetenv(name);
}

TEST_CASE("proxy credentials are redacted from any text") {
  ProxySettings proxies;
  proxies.https = "http://alice:pa55word@proxy:3128";
  CHECK(redact_url_credentials(proxies.https) == "http://***@proxy:3128");
  CHECK(proxies.describe().find("pa55word") == std::string::npos);
  CHECK(proxies.redact("user alice, pass pa55word, both alice:pa55word") ==
        "user ***, pass ***, both ***");
  ProxySettings short_user;
  short_user.http = "http://al:x@proxy:1";  // too short to star without starring every "al"
  CHECK(short_user.redact("all al:x") == "all ***");
}
