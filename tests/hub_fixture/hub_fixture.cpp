#include "hub_fixture/hub_fixture.hpp"

#include <openssl/evp.h>

#include <atomic>
#include <charconv>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace rbee::testing {
namespace {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::string to_hex(const unsigned char* data, unsigned length) {
  std::string hex;
  for (unsigned i = 0; i < length; ++i) hex += fmt::format("{:02x}", data[i]);
  return hex;
}

// Hashes generated content in 1 MiB pieces: SHA-256 of the bytes, and git's blob SHA-1.
std::pair<std::string, std::string> content_hashes(const FixtureFile& file) {
  EVP_MD_CTX* sha256 = EVP_MD_CTX_new();
  EVP_MD_CTX* sha1 = EVP_MD_CTX_new();
  EVP_DigestInit_ex(sha256, EVP_sha256(), nullptr);
  EVP_DigestInit_ex(sha1, EVP_sha1(), nullptr);
  const std::string header = fmt::format("blob {}", file.size) + std::string(1, '\0');
  EVP_DigestUpdate(sha1, header.data(), header.size());
  constexpr std::uint64_t kPiece = 1 << 20;
  for (std::uint64_t offset = 0; offset < file.size; offset += kPiece) {
    const auto piece = file_bytes(file, offset, std::min(kPiece, file.size - offset));
    EVP_DigestUpdate(sha256, piece.data(), piece.size());
    EVP_DigestUpdate(sha1, piece.data(), piece.size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_DigestFinal_ex(sha256, digest, &length);
  std::string sha256_hex = to_hex(digest, length);
  EVP_DigestFinal_ex(sha1, digest, &length);
  std::string sha1_hex = to_hex(digest, length);
  EVP_MD_CTX_free(sha256);
  EVP_MD_CTX_free(sha1);
  return {sha256_hex, sha1_hex};
}

std::atomic<bool> g_stopping{false};

void error_response(httplib::Response& response, int status, const std::string& code,
                    const std::string& message) {
  response.status = status;
  if (!code.empty()) response.set_header("X-Error-Code", code);
  response.set_content(nlohmann::json({{"error", message}}).dump(), "application/json");
}

// An error answer whose message is raw bytes, as a hostile or broken Hub may send them.
void raw_error_response(httplib::Response& response, int status, const std::string& message) {
  response.status = status;
  response.set_header("X-Error-Message", message);
  response.set_content("{\"error\":\"" + message + "\"}", "application/json");
}

// "bytes=N-" or "bytes=N-M" → {N, M or size-1}; nullopt when absent or not understood.
std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_range(const std::string& header,
                                                                   std::uint64_t size) {
  if (!header.starts_with("bytes=")) return std::nullopt;
  const std::string spec = header.substr(6);
  const auto dash = spec.find('-');
  if (dash == std::string::npos) return std::nullopt;
  std::uint64_t first = 0;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  auto [p, ec] = std::from_chars(spec.data(), spec.data() + dash, first);
  if (ec != std::errc() || p != spec.data() + dash) return std::nullopt;
  if (dash + 1 < spec.size()) {
    std::from_chars(spec.data() + dash + 1, spec.data() + spec.size(), last);
    last = std::min(last, size == 0 ? 0 : size - 1);
  }
  return std::make_pair(first, last);
}

}  // namespace

std::string generated_bytes(std::uint64_t seed, std::uint64_t offset, std::size_t length) {
  // Byte p is byte (p % 8) of splitmix64(seed·k + p / 8): one hash per 8 bytes, so the fixture
  // serves faster than the hive downloads.
  std::string out(length, '\0');
  std::uint64_t word_index = UINT64_MAX, word = 0;
  for (std::size_t i = 0; i < length; ++i) {
    const std::uint64_t position = offset + i;
    if (position / 8 != word_index) {
      word_index = position / 8;
      word = splitmix64(seed * 0x100000001B3ULL + word_index);
    }
    out[i] = static_cast<char>((word >> (8 * (position % 8))) & 0xFF);
  }
  return out;
}

std::string file_bytes(const FixtureFile& file, std::uint64_t offset, std::size_t length) {
  std::string out = file.bytes ? file.bytes->substr(offset, length)
                               : generated_bytes(file.seed, offset, length);
  for (const auto& patch : file.patches) {
    const std::uint64_t begin = std::max(offset, patch.offset);
    const std::uint64_t end = std::min(offset + length, patch.offset + patch.length);
    if (begin >= end) continue;
    const std::string changed = generated_bytes(patch.seed, begin, end - begin);
    out.replace(begin - offset, end - begin, changed);
  }
  return out;
}

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  return to_hex(digest, length);
}

std::string git_blob_sha1_hex(const std::string& data) {
  const std::string blob = fmt::format("blob {}", data.size()) + std::string(1, '\0') + data;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_Digest(blob.data(), blob.size(), digest, &length, EVP_sha1(), nullptr);
  return to_hex(digest, length);
}

HubFixture::HubFixture(int hub_port) {
  for (httplib::Server* server : {&hub_, &cdn_}) {
    server->new_task_queue = [] { return new httplib::ThreadPool(32); };
    server->set_tcp_nodelay(true);
    server->set_keep_alive_max_count(1000);
  }
  install_hub_routes();
  install_xet_token_route();
  install_cdn_routes();
  hub_port_ = hub_port > 0 ? (hub_.bind_to_port("127.0.0.1", hub_port) ? hub_port : -1)
                           : hub_.bind_to_any_port("127.0.0.1");
  cdn_port_ = cdn_.bind_to_any_port("127.0.0.1");
  if (hub_port_ <= 0 || cdn_port_ <= 0) {
    throw std::runtime_error(hub_port > 0 ? fmt::format("hub fixture cannot listen on {}", hub_port)
                                          : "hub fixture cannot listen");
  }
  hub_thread_ = std::thread([this] { hub_.listen_after_bind(); });
  cdn_thread_ = std::thread([this] { cdn_.listen_after_bind(); });
}

HubFixture::~HubFixture() {
  g_stopping = true;  // stalled responses give up
  hub_.stop();
  cdn_.stop();
  hub_thread_.join();
  cdn_thread_.join();
  g_stopping = false;
}

std::string HubFixture::endpoint() const {
  return fmt::format("http://127.0.0.1:{}", hub_port_);
}

void HubFixture::set_valid_token(std::string token) {
  std::lock_guard lock(mutex_);
  valid_token_ = std::move(token);
}

void HubFixture::add_repo(FixtureRepo repo) {
  StoredRepo stored{repo, {}};
  for (const auto& file : repo.files) {
    auto [sha256, sha1] = content_hashes(file);
    std::string xet_hash;
    if (file.xet) {
      xet_hash = xet().add_file(
          [&file](std::uint64_t offset, std::size_t n) { return file_bytes(file, offset, n); },
          file.size, file.xet_layout);
    }
    stored.files.emplace(file.path, StoredFile{file, sha256, sha1, xet_hash});
  }
  std::lock_guard lock(mutex_);
  for (const auto& [path, file] : stored.files) {
    if (file.file.lfs) blobs_[file.sha256] = {repo.id, path};
  }
  repos_[repo.id] = std::move(stored);
}

void HubFixture::set_faults(const std::string& file_path, Faults faults) {
  std::lock_guard lock(mutex_);
  faults_[file_path] = faults;
}

void HubFixture::set_max_concurrent_content(int bodies) {
  std::lock_guard lock(mutex_);
  max_bodies_ = bodies;
}

void HubFixture::set_rate_limit(std::uint64_t bytes_per_second) {
  std::lock_guard lock(mutex_);
  rate_limit_ = bytes_per_second;
}

std::string HubFixture::content(const std::string& repo_id, const std::string& file_path) const {
  std::lock_guard lock(mutex_);
  const auto& file = repos_.at(repo_id).files.at(file_path).file;
  return file_bytes(file, 0, file.size);
}

XetStore& HubFixture::xet() {
  std::lock_guard lock(xet_mutex_);
  if (!xet_) {
    xet_ = std::make_unique<XetStore>(
        [this](const std::string& listener, const httplib::Request& request, int status) {
          record(listener, request, status);
        });
  }
  return *xet_;
}

void HubFixture::set_bridge_limit(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  bridge_limit_ = bytes;
}

std::vector<RecordedRequest> HubFixture::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

void HubFixture::clear_requests() {
  std::lock_guard lock(mutex_);
  requests_.clear();
}

const HubFixture::StoredRepo* HubFixture::find_repo(const std::string& id) const {
  auto it = repos_.find(id);
  return it == repos_.end() ? nullptr : &it->second;
}

namespace {

// "org/name" from the first two captures, or "name" for a canonical repo without an owner
// (the first capture then matched nothing).
std::string repo_id_of(const httplib::Request& request) {
  const std::string org = request.matches[1].str();
  return org.empty() ? request.matches[2].str() : org + "/" + request.matches[2].str();
}

}  // namespace

bool HubFixture::authorized(const StoredRepo& repo, const httplib::Request& request) const {
  if (repo.repo.access == RepoAccess::open) return true;
  return !valid_token_.empty() &&
         request.get_header_value("Authorization") == "Bearer " + valid_token_;
}

std::optional<Faults> HubFixture::take_faults(const std::string& file_path) {
  std::lock_guard lock(mutex_);
  auto it = faults_.find(file_path);
  if (it == faults_.end()) return std::nullopt;
  Faults faults = it->second;
  if (--it->second.times <= 0) faults_.erase(it);
  return faults;
}

void HubFixture::record(const std::string& listener, const httplib::Request& request, int status) {
  std::lock_guard lock(mutex_);
  requests_.push_back({listener, request.method, request.path, request.get_header_value("Range"),
                       request.get_header_value("Authorization"), status, request.remote_port});
}

void HubFixture::install_hub_routes() {
  hub_.Get(R"(/api/models/(?:([^/]+)/)?([^/]+)/revision/(.+))", [this](const httplib::Request& request,
                                                                  httplib::Response& response) {
    const std::string id = repo_id_of(request);
    const std::string revision = request.matches[3].str();
    auto listing_faults = take_faults("/api/models/" + id);
    if (listing_faults && listing_faults->stall_after_bytes) {
      // A Hub that takes the request and never answers (its head never completes).
      for (int i = 0; i < 600 && !g_stopping; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      return;
    }
    if (auto faults = listing_faults; faults && faults->error_status) {
      if (!faults->error_message.empty()) {
        raw_error_response(response, faults->error_status, faults->error_message);
      } else {
        error_response(response, faults->error_status, "", "injected failure");
      }
      if (faults->retry_after_s >= 0) {
        response.set_header("Retry-After", std::to_string(faults->retry_after_s));
      }
      return;
    }
    std::unique_lock lock(mutex_);
    const StoredRepo* repo = find_repo(id);
    if (!repo) {
      for (const auto& [other_id, other] : repos_) {
        if (other.repo.renamed_from == id) {  // the Hub redirects a renamed repo's API calls
          response.status = 307;
          response.set_header("Location", "/api/models/" + other_id + "/revision/" + revision +
                                              (request.params.empty() ? "" : "?blobs=true"));
          lock.unlock();
          return record("hub", request, 307);
        }
      }
    }
    const bool bad_token = request.has_header("Authorization") &&
                           request.get_header_value("Authorization") != "Bearer " + valid_token_;
    if (bad_token) {
      error_response(response, 401, "", "Invalid credentials in Authorization header");
    } else if (!repo ||
               (repo->repo.access == RepoAccess::private_repo && !authorized(*repo, request))) {
      error_response(response, 401, "RepoNotFound", "Repository not found");
    } else if (repo->repo.access != RepoAccess::gated_files && !authorized(*repo, request)) {
      error_response(response, 401, "GatedRepo", "Access to model " + id + " is restricted");
    } else if (revision != repo->repo.commit &&
               std::find(repo->repo.revisions.begin(), repo->repo.revisions.end(), revision) ==
                   repo->repo.revisions.end()) {
      error_response(response, 404, "RevisionNotFound", "Invalid rev id: " + revision);
    } else if (repo->repo.raw_listing) {
      const std::string body = *repo->repo.raw_listing;
      if (!repo->repo.raw_listing_encoding.empty()) {
        response.set_header("Content-Encoding", repo->repo.raw_listing_encoding);
      }
      // Sent as it is (set_content would compress or pick a type by itself).
      response.set_content_provider(
          body.size(), "application/json",
          [body](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
            return sink.write(body.data() + offset, std::min(length, body.size() - offset));
          });
    } else {
      nlohmann::json siblings = nlohmann::json::array();
      for (const auto& [path, file] : repo->files) {
        nlohmann::json sibling = {
            {"rfilename", path}, {"size", file.file.size}, {"blobId", file.git_sha1}};
        if (file.file.lfs) {
          sibling["lfs"] = {
              {"sha256", file.sha256}, {"size", file.file.size}, {"pointerSize", 134}};
        }
        if (!file.xet_hash.empty()) sibling["xetHash"] = file.xet_hash;
        siblings.push_back(sibling);
      }
      // As the Hub: "gated" is false or how access is granted, "private" a boolean.
      const nlohmann::json gated =
          repo->repo.access == RepoAccess::gated || repo->repo.access == RepoAccess::gated_files
              ? nlohmann::json("auto")
              : nlohmann::json(false);
      response.set_content(nlohmann::json({{"id", id},
                                           {"sha", repo->repo.commit},
                                           {"gated", gated},
                                           {"private", repo->repo.access == RepoAccess::private_repo},
                                           {"siblings", siblings}})
                               .dump(),
                           "application/json");
    }
    lock.unlock();
    record("hub", request, response.status);
  });

  hub_.Get(R"(/(?:([^/]+)/)?([^/]+)/resolve/(.+))", [this](const httplib::Request& request,
                                                      httplib::Response& response) {
    const std::string id = repo_id_of(request);
    const std::string rest = request.matches[3].str();
    std::unique_lock lock(mutex_);
    const StoredRepo* repo = find_repo(id);
    if (!repo) {
      for (const auto& [other_id, other] : repos_) {
        if (other.repo.renamed_from == id) {
          response.status = 307;
          response.set_header("Location", "/" + other_id + "/resolve/" + rest);
          lock.unlock();
          return record("hub", request, 307);
        }
      }
    }
    if (!repo || (repo->repo.access == RepoAccess::private_repo && !authorized(*repo, request))) {
      error_response(response, 401, "RepoNotFound", "Repository not found");
    } else if (!authorized(*repo, request)) {
      error_response(response, 401, "GatedRepo", "Access to model " + id + " is restricted");
    } else {
      std::vector<std::string> revisions = repo->repo.revisions;
      revisions.push_back(repo->repo.commit);
      std::optional<std::string> path;
      for (const auto& revision : revisions) {
        if (rest.starts_with(revision + "/")) path = rest.substr(revision.size() + 1);
      }
      auto file = path ? repo->files.find(*path) : repo->files.end();
      if (!path) {
        error_response(response, 404, "RevisionNotFound", "Invalid rev id");
      } else if (file == repo->files.end()) {
        error_response(response, 404, "EntryNotFound", "Entry not found");
      } else {
        response.set_header("X-Repo-Commit", repo->repo.commit);
        if (file->second.file.lfs) {
          response.set_header("X-Linked-Etag", "\"" + file->second.sha256 + "\"");
          response.set_header("X-Linked-Size", std::to_string(file->second.file.size));
          response.set_header("ETag", "\"" + file->second.sha256 + "\"");
          response.status = 302;
          if (!file->second.xet_hash.empty()) {
            // Xet storage: where the token and the reconstruction are (DESIGN §15). With
            // Accept: application/vnd.xet-fileinfo+json the Hub answers 200 with these alone.
            const std::string token_url = fmt::format(
                "{}/api/models/{}/xet-read-token/{}", endpoint(), id, repo->repo.commit);
            response.set_header("X-Xet-Hash", file->second.xet_hash);
            response.set_header("X-Xet-Refresh-Route", token_url);
            response.set_header("Link", fmt::format(
                "<{}>; rel=\"xet-auth\", <{}/v1/reconstructions/{}>; rel=\"xet-reconstruction-info\"",
                token_url, xet().cas_url(), file->second.xet_hash));
            if (request.get_header_value("Accept").find("application/vnd.xet-fileinfo+json") !=
                std::string::npos) {
              response.status = 200;
              response.set_content(
                  nlohmann::json({{"hash", file->second.xet_hash},
                                  {"refreshUrl", token_url},
                                  {"reconstructionUrl", fmt::format("{}/v1/reconstructions/{}",
                                                                    xet().cas_url(),
                                                                    file->second.xet_hash)},
                                  {"etag", file->second.sha256},
                                  {"size", file->second.file.size}})
                      .dump(),
                  "application/vnd.xet-fileinfo+json");
            }
          }
          response.set_header(
              "Location", !file->second.file.cdn_location.empty()
                              ? file->second.file.cdn_location
                              : fmt::format("http://127.0.0.1:{}/blobs/{}?expires=9999999999&sig=x",
                                            cdn_port_, file->second.sha256));
        } else {
          response.set_header("ETag", "\"" + file->second.git_sha1 + "\"");
          const StoredFile stored = file->second;
          lock.unlock();
          serve_content(request, response, stored);
          return record("hub", request, response.status);
        }
      }
    }
    if (lock.owns_lock()) lock.unlock();
    record("hub", request, response.status);
  });
}

// The Xet read token of a repo (DESIGN §15): as the listing, it needs the Hub token for gated
// and private repos.
void HubFixture::install_xet_token_route() {
  hub_.Get(R"(/api/models/(?:([^/]+)/)?([^/]+)/xet-read-token/(.+))",
           [this](const httplib::Request& request, httplib::Response& response) {
             const std::string id = repo_id_of(request);
             std::unique_lock lock(mutex_);
             const StoredRepo* repo = find_repo(id);
             const bool allowed = repo && authorized(*repo, request);
             lock.unlock();
             if (!allowed) {
               error_response(response, 401, "RepoNotFound", "Repository not found");
             } else {
               const auto [token, expires] = xet().issue_token();
               response.set_content(nlohmann::json({{"accessToken", token},
                                                    {"exp", expires},
                                                    {"casUrl", xet().cas_url()}})
                                        .dump(),
                                    "application/json");
             }
             record("hub", request, response.status);
           });
}

void HubFixture::install_cdn_routes() {
  cdn_.Get(R"(/blobs/([0-9a-f]+))",
           [this](const httplib::Request& request, httplib::Response& response) {
             std::unique_lock lock(mutex_);
             auto blob = blobs_.find(request.matches[1].str());
             if (blob == blobs_.end()) {
               error_response(response, 404, "", "no such blob");
               lock.unlock();
               return record("cdn", request, 404);
             }
             const StoredFile stored = repos_.at(blob->second.first).files.at(blob->second.second);
             const bool too_large = stored.file.size > bridge_limit_;
             lock.unlock();
             if (too_large) {  // the bridge's limit: such files exist only in Xet storage
               error_response(response, 400, "", "File too large to be served by the bridge");
               return record("cdn", request, 400);
             }
             serve_content(request, response, stored);
             record("cdn", request, response.status);
           });
}

void HubFixture::serve_content(const httplib::Request& request, httplib::Response& response,
                               const StoredFile& stored) {
  // The fixture answers ranges itself: cpp-httplib would otherwise re-apply the Range header to
  // the response (and underflow on a range past the end).
  const_cast<httplib::Request&>(request).ranges.clear();
  const std::uint64_t size = stored.file.size;
  const std::optional<Faults> faults =
      request.method == "GET" ? take_faults(stored.file.path) : std::nullopt;
  if (faults && faults->expire_signed_url) {
    response.status = 403;
    response.set_content("Request has expired", "text/plain");
    return;
  }
  if (faults && faults->error_status != 0) {
    response.status = faults->error_status;
    if (faults->retry_after_s >= 0) {
      response.set_header("Retry-After", std::to_string(faults->retry_after_s));
    }
    if (!faults->error_message.empty()) {
      return raw_error_response(response, faults->error_status, faults->error_message);
    }
    response.set_content("injected failure", "text/plain");
    return;
  }
  std::uint64_t first = 0;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  const auto range = parse_range(request.get_header_value("Range"), size);
  if (range && !(faults && faults->ignore_range)) {
    if (range->first >= size) {
      response.status = 416;
      response.set_header("Content-Range", fmt::format("bytes */{}", size));
      return;
    }
    first = range->first;
    last = range->second;
    response.status = 206;
    response.set_header("Content-Range", faults && !faults->content_range.empty()
                                             ? faults->content_range
                                             : fmt::format("bytes {}-{}/{}", first, last, size));
  }
  // A lying server: more body than the file has (generated_bytes goes on past its end).
  const std::uint64_t length =
      (size == 0 ? 0 : last - first + 1) + (faults ? faults->surplus_bytes : 0);
  std::uint64_t rate;
  int max_bodies;
  {
    std::lock_guard lock(mutex_);
    rate = faults && faults->bytes_per_second ? faults->bytes_per_second : rate_limit_;
    max_bodies = max_bodies_;
  }
  if (request.method == "GET") {
    const int open = content_responses_.fetch_add(1) + 1;
    if (max_bodies > 0 && open > max_bodies) {
      content_responses_.fetch_sub(1);
      response.status = 429;
      response.set_header("Retry-After", "1");
      response.set_content("too many connections", "text/plain");
      return;
    }
    int seen = max_content_responses_.load();
    while (open > seen && !max_content_responses_.compare_exchange_weak(seen, open)) {
    }
  }
  const auto started = std::chrono::steady_clock::now();
  // The body counts as sent when its last byte is written, not when the server releases it
  // (the client may have moved on to its next request by then).
  // HEAD answers are not bodies: the server releases them after the client has moved on.
  auto counted = std::make_shared<std::atomic<bool>>(request.method == "GET");
  auto uncount = [this, counted] {
    if (counted->exchange(false)) content_responses_.fetch_sub(1);
  };
  response.set_content_provider(
      length, "application/octet-stream",
      [this, stored, first, faults, rate, started, length, uncount](
          std::size_t offset, std::size_t wanted, httplib::DataSink& sink) {
        const std::uint64_t sent = offset;
        if (faults && faults->drop_after_bytes && sent >= *faults->drop_after_bytes) return false;
        if (faults && faults->stall_after_bytes && sent >= *faults->stall_after_bytes) {
          for (int i = 0; i < 600 && !g_stopping; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
          return false;
        }
        std::size_t n = std::min<std::size_t>(wanted, 64 * 1024);
        if (faults && faults->drop_after_bytes) {
          n = std::min<std::uint64_t>(n, *faults->drop_after_bytes - sent);
        }
        if (faults && faults->stall_after_bytes) {
          n = std::min<std::uint64_t>(n, *faults->stall_after_bytes - sent);
        }
        std::string piece = file_bytes(stored.file, first + offset, n);
        if (faults && faults->corrupt_at && *faults->corrupt_at >= first + offset &&
            *faults->corrupt_at < first + offset + n) {
          piece[*faults->corrupt_at - first - offset] ^= 0x5A;
        }
        if (rate > 0) {  // pace this connection like a CDN's per-connection cap
          const auto due = started + std::chrono::microseconds((offset + n) * 1000000 / rate);
          std::this_thread::sleep_until(due);
        }
        if (offset + n >= length) uncount();  // before the client can see the last byte
        content_bytes_sent_ += piece.size();
        return sink.write(piece.data(), piece.size());
      },
      [uncount](bool) { uncount(); });
}

std::uint64_t HubFixture::content_bytes_sent() const {
  return content_bytes_sent_.load();
}

int HubFixture::max_concurrent_content() const {
  return max_content_responses_.load();
}

void HubFixture::reset_max_concurrent_content() {
  max_content_responses_ = content_responses_.load();
}

}  // namespace rbee::testing
