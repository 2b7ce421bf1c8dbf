#pragma once
// HubFixture: a local Hugging Face Hub for tests. Two loopback listeners: the "hub" (API,
// resolve, regular files) and the "CDN" (LFS blobs behind signed, expiring URLs). File contents
// are generated from a seed, so tests can use files of any size without storing them, and every
// request is recorded so tests can assert on Range use and on where Authorization went.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "hub_fixture/xet_store.hpp"

namespace rbee::testing {

// Bytes [offset, offset + length) of a file come from another seed: a revision that changed.
struct ContentPatch {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t seed = 0;
};

struct FixtureFile {
  std::string path;
  std::uint64_t size = 0;
  bool lfs = false;          // LFS files are served by the CDN and verified by SHA-256
  std::uint64_t seed = 1;    // content: generated_bytes(seed, offset, n), then the patches
  std::string cdn_location;  // LFS: the resolve redirects here instead of the fixture's CDN
  std::vector<ContentPatch> patches;
  bool xet = false;  // LFS only: also in the Xet store (X-Xet-Hash; the CDN is the bridge)
  XetLayout xet_layout;
  // The whole content when set (a generated GGUF, say), instead of the seed's bytes; the
  // patches still apply on top of it. `size` must be its size.
  std::shared_ptr<const std::string> bytes;
};

// gated: the listing and the files need the token. gated_files: as the real Hub does it, the
// listing answers anyone and only the files need the token (401 GatedRepo).
enum class RepoAccess { open, gated, gated_files, private_repo };

struct FixtureRepo {
  std::string id;  // "org/name"
  std::string commit = "0123456789abcdef0123456789abcdef01234567";
  std::vector<std::string> revisions = {"main"};  // the commit itself is always accepted too
  RepoAccess access = RepoAccess::open;
  std::vector<FixtureFile> files;
  std::optional<std::string> renamed_from;  // the old id answers 307 to this one (API too)
  std::optional<std::string> raw_listing;   // served as the listing's body instead of the truth
  std::string raw_listing_encoding;         // its Content-Encoding (e.g. "gzip"), unrequested
};

// Faults for one file (by repo path), each applied to the next `times` matching requests. The
// key "/api/models/<org>/<name>" targets the repo's listing instead (error_status with
// error_message and retry_after_s, or stall_after_bytes: no answer at all for 30 s).
struct Faults {
  int times = 1;
  std::optional<std::uint64_t> drop_after_bytes;   // close the connection after N body bytes
  std::optional<std::uint64_t> corrupt_at;         // flip the byte at this file offset
  int error_status = 0;                            // answer this status (5xx, 429, 403…)
  int retry_after_s = -1;                          // with a Retry-After header when >= 0
  std::optional<std::uint64_t> stall_after_bytes;  // send N bytes, then nothing until dropped
  bool ignore_range = false;                       // answer 200 with the whole file
  bool expire_signed_url = false;                  // the CDN answers 403: the URL expired
  std::string content_range;        // a 206 answer carries this Content-Range instead of the truth
  std::uint64_t surplus_bytes = 0;  // the body goes on this many bytes past what was asked
  std::string error_message;        // raw bytes (any, even invalid UTF-8) in an error answer's
                                    // JSON "error" and X-Error-Message header
  std::uint64_t bytes_per_second = 0;  // this answer is paced so (a slow route); 0: as usual
};

struct RecordedRequest {
  std::string listener;  // "hub" or "cdn"
  std::string method;
  std::string path;   // decoded path, without the query
  std::string range;  // the Range header, if any
  std::string authorization;
  int status = 0;
  int client_port = 0;  // the client's port: requests on one connection share it
};

std::string generated_bytes(std::uint64_t seed, std::uint64_t offset, std::size_t length);
// A fixture file's bytes: generated from its seed, with its patches applied.
std::string file_bytes(const FixtureFile& file, std::uint64_t offset, std::size_t length);
std::string sha256_hex(const std::string& data);
// git's blob id: SHA-1 of "blob <size>\0" and the bytes (the ETag of a regular file).
std::string git_blob_sha1_hex(const std::string& data);

class HubFixture {
 public:
  // `hub_port` 0: any free port (tests); the CDN listener always takes a free one.
  explicit HubFixture(int hub_port = 0);
  ~HubFixture();
  HubFixture(const HubFixture&) = delete;
  HubFixture& operator=(const HubFixture&) = delete;

  std::string endpoint() const;  // http://127.0.0.1:<hub port>
  int cdn_port() const { return cdn_port_; }
  void set_valid_token(std::string token);  // accepted for gated and private repos

  void add_repo(FixtureRepo repo);
  void set_faults(const std::string& file_path, Faults faults);
  void set_rate_limit(std::uint64_t bytes_per_second);  // per connection; 0 = none
  // A file body asked for while `bodies` are already being sent gets 429 (Retry-After: 1), as
  // a CDN that allows so many connections per client; 0 = no limit.
  void set_max_concurrent_content(int bodies);

  std::string content(const std::string& repo_id, const std::string& file_path) const;

  // The Xet storage (CAS and transfer listeners), started with the first Xet file.
  XetStore& xet();
  // The bridge (the CDN) refuses LFS files larger than this, as the Hub's does (~50 GB).
  void set_bridge_limit(std::uint64_t bytes);
  std::vector<RecordedRequest> requests() const;
  void clear_requests();
  // File body bytes (hub and CDN) handed to connections so far.
  std::uint64_t content_bytes_sent() const;
  // The most file bodies (hub and CDN) being sent at once since the last reset.
  int max_concurrent_content() const;
  void reset_max_concurrent_content();

 private:
  struct StoredFile {
    FixtureFile file;
    std::string sha256;    // of the content
    std::string git_sha1;  // of "blob <size>\0<content>"
    std::string xet_hash;  // Xet files only
  };
  struct StoredRepo {
    FixtureRepo repo;
    std::map<std::string, StoredFile> files;
  };

  void install_hub_routes();
  void install_cdn_routes();
  void install_xet_token_route();
  const StoredRepo* find_repo(const std::string& id) const;
  bool authorized(const StoredRepo& repo, const httplib::Request& request) const;
  std::optional<Faults> take_faults(const std::string& file_path);
  void serve_content(const httplib::Request& request, httplib::Response& response,
                     const StoredFile& file);
  void record(const std::string& listener, const httplib::Request& request, int status);

  mutable std::mutex mutex_;
  std::map<std::string, StoredRepo> repos_;
  std::map<std::string, std::pair<std::string, std::string>> blobs_;  // sha256 → repo, path
  std::map<std::string, Faults> faults_;
  std::vector<RecordedRequest> requests_;
  std::string valid_token_;
  std::uint64_t rate_limit_ = 0;
  int max_bodies_ = 0;
  std::atomic<int> content_responses_{0};
  std::atomic<int> max_content_responses_{0};
  std::atomic<std::uint64_t> content_bytes_sent_{0};

  std::uint64_t bridge_limit_ = UINT64_MAX;
  std::mutex xet_mutex_;
  std::unique_ptr<XetStore> xet_;  // before the servers: they use it, and stop first

  httplib::Server hub_;
  httplib::Server cdn_;
  int hub_port_ = 0;
  int cdn_port_ = 0;
  std::thread hub_thread_;
  std::thread cdn_thread_;
};

}  // namespace rbee::testing
