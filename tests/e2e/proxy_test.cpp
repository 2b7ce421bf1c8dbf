// The client data path through real proxies and a real TLS/HTTP/2 server (DESIGN §14): the
// hive downloads through tinyproxy (plain http and CONNECT for https), NO_PROXY bypasses it,
// proxy credentials appear nowhere, and nginx with a test CA speaks HTTP/2 to it.

#include <doctest/doctest.h>

#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "e2e/hive_with_hub.hpp"
#include "support/background_process.hpp"

using namespace rbee::testing;
using namespace std::chrono_literals;

namespace {

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// tinyproxy on a free loopback port; its log names every request line and CONNECT.
struct Tinyproxy {
  TempDir dir;
  int port = free_port();
  std::unique_ptr<BackgroundProcess> process;

  explicit Tinyproxy(const std::string& basic_auth = "") {
    std::ofstream(dir / "tinyproxy.conf") << fmt::format(
        "Port {}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 200\n"
        "LogFile \"{}\"\nLogLevel Connect\n{}",
        port, (dir / "tinyproxy.log").string(),
        basic_auth.empty() ? "" : "BasicAuth " + basic_auth + "\n");
    process = std::make_unique<BackgroundProcess>(
        std::vector<std::string>{"tinyproxy", "-d", "-c", (dir / "tinyproxy.conf").string()},
        (dir / "tinyproxy.out").string(), port);
  }
  std::string url(const std::string& credentials = "") const {
    return fmt::format("http://{}127.0.0.1:{}", credentials.empty() ? "" : credentials + "@", port);
  }
  std::string log() const { return read_all(dir / "tinyproxy.log"); }
  // The request lines tinyproxy forwarded ("GET http://...", "CONNECT host:port").
  std::vector<std::string> requests() const {
    std::vector<std::string> lines;
    std::istringstream in(log());
    static const std::regex request(R"(Request \(file descriptor \d+\): (\S+ \S+))");
    std::smatch match;
    for (std::string line; std::getline(in, line);) {
      if (std::regex_search(line, match, request)) lines.push_back(match[1]);
    }
    return lines;
  }
};

// A test CA and a certificate for 127.0.0.1 that it signed, made with the openssl CLI.
struct TestCertificates {
  TempDir dir;
  std::filesystem::path ca = dir / "ca.pem", cert = dir / "server.pem", key = dir / "server.key";

  TestCertificates() {
    const std::string log = (dir / "openssl.log").string();
    const auto d = [&](const char* name) { return (dir / name).string(); };
    std::ofstream(dir / "san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    REQUIRE(
        run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                     d("ca.key"), "-out", ca.string(), "-subj", "/CN=rbee test CA", "-days", "2"},
                    log) == 0);
    REQUIRE(run_command({"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key.string(),
                         "-out", d("server.csr"), "-subj", "/CN=127.0.0.1"},
                        log) == 0);
    REQUIRE(run_command({"openssl", "x509", "-req", "-in", d("server.csr"), "-CA", ca.string(),
                         "-CAkey", d("ca.key"), "-CAcreateserial", "-out", cert.string(), "-days",
                         "2", "-extfile", d("san.ext")},
                        log) == 0);
  }
};

// nginx with TLS and HTTP/2 in front of the Hub fixture's API listener; its access log has
// the protocol and connection number of every request.
struct TlsFront {
  TempDir dir;
  int port = free_port();
  std::unique_ptr<BackgroundProcess> process;

  TlsFront(const TestCertificates& certificates, const HubFixture& hub) {
    const std::string d = dir.path().string();
    std::ofstream(dir / "nginx.conf") << fmt::format(
        R"(daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
  log_format protocol '$server_protocol $connection $request_method $uri $status';
  access_log {d}/access.log protocol;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass {hub};
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_set_header Host $http_host;
    }}
  }}
}}
)",
        fmt::arg("d", d), fmt::arg("user", ::geteuid() == 0 ? "user root;" : ""),
        fmt::arg("port", port), fmt::arg("cert", certificates.cert.string()),
        fmt::arg("key", certificates.key.string()), fmt::arg("hub", hub.endpoint()));
    process = std::make_unique<BackgroundProcess>(
        std::vector<std::string>{"nginx", "-c", (dir / "nginx.conf").string(), "-p", d},
        (dir / "nginx.out").string(), port);
  }
  std::string endpoint() const { return fmt::format("https://127.0.0.1:{}", port); }
  std::string access_log() const { return read_all(dir / "access.log"); }
};

SseStream download(const HiveUnderTest& hive, const std::string& model) {
  return watch(*hive.hive, hive->submit_job({{"operation", "model_download"}, {"model", model}}));
}

bool downloaded(const HiveUnderTest& hive, const HubFixture& hub, const FixtureRepo& repo) {
  for (const auto& file : repo.files) {
    if (read_all(model_file(hive.cache, repo.id, file.path)) != hub.content(repo.id, file.path)) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("HTTP_PROXY carries every request of a download, and the files verify") {
  Tinyproxy proxy;
  HubFixture hub;
  hub.add_repo(tiny_repo("acme/tiny"));
  // Uppercase, which libcurl alone would ignore for http:// URLs (the "httpoxy" rule).
  HiveUnderTest hive(fast_flags(), "",
                     {{"HF_ENDPOINT", hub.endpoint()}, {"HTTP_PROXY", proxy.url()}});
  const auto stream = download(hive, "acme/tiny");
  REQUIRE(stream.terminal() == "[DONE]");
  CHECK(downloaded(hive, hub, tiny_repo("acme/tiny")));

  const auto forwarded = proxy.requests();
  const auto reached = hub.requests();
  CHECK(!reached.empty());
  CHECK(forwarded.size() == reached.size());  // nothing went around the proxy
  const std::string log = proxy.log();
  CHECK(log.find(fmt::format("GET {}/api/models/acme/tiny/revision/", hub.endpoint())) !=
        std::string::npos);
  CHECK(log.find(fmt::format("GET http://127.0.0.1:{}/", hub.cdn_port())) != std::string::npos);
}

TEST_CASE("NO_PROXY sends matching hosts direct") {
  Tinyproxy proxy;
  HubFixture hub;
  hub.add_repo(tiny_repo("acme/tiny"));
  HiveUnderTest hive(fast_flags(), "",
                     {{"HF_ENDPOINT", hub.endpoint()},
                      {"http_proxy", proxy.url()},
                      {"NO_PROXY", "example.org,127.0.0.1"}});
  const auto stream = download(hive, "acme/tiny");
  REQUIRE(stream.terminal() == "[DONE]");
  CHECK(downloaded(hive, hub, tiny_repo("acme/tiny")));
  CHECK(proxy.requests().empty());
  CHECK(!hub.requests().empty());
}

TEST_CASE("proxy credentials work and appear in no log, narration or error") {
  Tinyproxy proxy("rbeeproxyuser s3cr3tPassw0rd");
  HubFixture hub;
  hub.add_repo(tiny_repo("acme/tiny"));
  const std::string credentials = "rbeeproxyuser:s3cr3tPassw0rd";
  std::string everything;
  {
    HiveUnderTest hive(fast_flags(), "",
                       {{"HF_ENDPOINT", hub.endpoint()}, {"HTTP_PROXY", proxy.url(credentials)}});
    const auto stream = download(hive, "acme/tiny");
    CHECK(stream.terminal() == "[DONE]");
    CHECK(proxy.requests().size() == hub.requests().size());
    everything += stream_text(stream) + hive->log();
    CHECK(hive->log().find("***@127.0.0.1") != std::string::npos);  // the proxy, redacted
  }
  {
    // A proxy that is not there: the errors name it, never its credentials.
    const std::string dead = fmt::format("http://{}@127.0.0.1:{}", credentials, free_port());
    HiveUnderTest hive(fast_flags({"--download-attempts", "1"}), "",
                       {{"HF_ENDPOINT", hub.endpoint()}, {"HTTP_PROXY", dead}});
    const auto stream = download(hive, "acme/tiny");
    CHECK(stream.terminal().starts_with("[ERROR]"));
    everything += stream_text(stream) + hive->log() +
                  read_all(model_dir(hive.cache, "acme/tiny") / "metadata.yaml");
  }
  CHECK(everything.find("s3cr3tPassw0rd") == std::string::npos);
  CHECK(everything.find("rbeeproxyuser") == std::string::npos);
}

TEST_CASE("https through a proxy goes by CONNECT, verified against RBEE_CA_BUNDLE, over HTTP/2") {
  TestCertificates certificates;
  HubFixture hub;
  hub.add_repo(tiny_repo("acme/tiny"));
  TlsFront front(certificates, hub);
  Tinyproxy proxy;
  HiveUnderTest hive(fast_flags(), "",
                     {{"HF_ENDPOINT", front.endpoint()},
                      {"HTTPS_PROXY", proxy.url()},
                      {"HTTP_PROXY", proxy.url()},  // the fixture's CDN is plain http
                      {"RBEE_CA_BUNDLE", certificates.ca.string()}});
  const auto stream = download(hive, "acme/tiny");
  REQUIRE(stream.terminal() == "[DONE]");
  CHECK(downloaded(hive, hub, tiny_repo("acme/tiny")));
  const std::string log = proxy.log();
  CHECK(log.find(fmt::format("CONNECT 127.0.0.1:{}", front.port)) != std::string::npos);
  CHECK(log.find(fmt::format("GET http://127.0.0.1:{}/", hub.cdn_port())) != std::string::npos);
  const std::string access = front.access_log();
  CHECK(access.find("HTTP/2.0 ") != std::string::npos);
  CHECK(access.find("HTTP/1.1 ") == std::string::npos);
}

TEST_CASE("TLS is verified: a certificate no trusted CA signed fails the download") {
  TestCertificates certificates;
  HubFixture hub;
  hub.add_repo(tiny_repo("acme/tiny"));
  TlsFront front(certificates, hub);
  HiveUnderTest hive(fast_flags({"--download-attempts", "1"}), "",
                     {{"HF_ENDPOINT", front.endpoint()}});  // no RBEE_CA_BUNDLE
  const auto stream = download(hive, "acme/tiny");
  REQUIRE(stream.terminal().starts_with("[ERROR]"));
  CHECK(stream.terminal().find("certificate") != std::string::npos);
  CHECK(front.access_log().empty());  // not one request was sent over the unverified channel
}

TEST_CASE("a repo of small files over HTTP/2 shares one connection between its parallel files") {
  TestCertificates certificates;
  HubFixture hub;
  FixtureRepo repo;
  repo.id = "acme/many";
  for (int i = 0; i < 60; ++i) {
    repo.files.push_back({fmt::format("shard-{:02}.json", i), 700 + static_cast<std::uint64_t>(i),
                          false, static_cast<std::uint64_t>(100 + i)});
  }
  hub.add_repo(repo);
  TlsFront front(certificates, hub);
  HiveUnderTest hive(
      fast_flags({"--parallel-files", "16"}), "",
      {{"HF_ENDPOINT", front.endpoint()}, {"RBEE_CA_BUNDLE", certificates.ca.string()}});
  const auto stream = download(hive, "acme/many");
  REQUIRE(stream.terminal() == "[DONE]");
  CHECK(downloaded(hive, hub, repo));
  std::istringstream access(front.access_log());
  std::set<std::string> connections;  // nginx's connection serial numbers of the file requests
  int answered = 0;
  for (std::string protocol, connection, method, uri, status;
       access >> protocol >> connection >> method >> uri >> status;) {
    CHECK(protocol == "HTTP/2.0");
    if (uri.find("/resolve/") == std::string::npos) continue;
    connections.insert(connection);
    // A few streams opened in the connection's first moments are reset by libcurl and sent
    // again on the same connection (nginx logs those 499); the hive sees only the answers.
    answered += status == "200";
  }
  CHECK(answered == 60);
  // 16 files at once, multiplexed: one connection (another only if one was lost meanwhile).
  CHECK_MESSAGE(connections.size() <= 2, connections.size() << " connections");
}
