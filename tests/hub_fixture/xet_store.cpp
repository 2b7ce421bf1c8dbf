#include "hub_fixture/xet_store.hpp"

#include <lz4frame.h>
#include <openssl/evp.h>

#include <charconv>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace rbee::testing {
namespace {

using Json = nlohmann::json;
using SystemClock = std::chrono::system_clock;

constexpr std::size_t kFixedChunk = 64 << 10;
constexpr std::size_t kMinChunk = 8 << 10;
constexpr std::size_t kMaxChunk = 128 << 10;
constexpr std::size_t kXorbMaxBytes = 64 << 20;
constexpr std::string_view kBoundary = "rbee_xorb_ranges";

std::string sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             SystemClock::now().time_since_epoch())
      .count();
}

std::uint64_t gear(unsigned char byte) {
  std::uint64_t x = byte * 0x9E3779B97F4A7C15ULL + 0x1234567;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::string lz4_frame(std::string_view data) {
  std::string out(LZ4F_compressFrameBound(data.size(), nullptr), '\0');
  const std::size_t n =
      LZ4F_compressFrame(out.data(), out.size(), data.data(), data.size(), nullptr);
  if (LZ4F_isError(n)) throw std::runtime_error("LZ4F_compressFrame failed");
  out.resize(n);
  return out;
}

// The chunk as a xorb holds it: the 8-byte header, then the (compressed) data.
std::string encode_chunk(std::string_view chunk, int scheme) {
  std::string data;
  if (scheme == 0) {
    data.assign(chunk);
  } else if (scheme == 1) {
    data = lz4_frame(chunk);
  } else {
    std::string planes;
    for (std::size_t plane = 0; plane < 4; ++plane) {
      for (std::size_t at = plane; at < chunk.size(); at += 4) planes += chunk[at];
    }
    data = lz4_frame(planes);
  }
  std::string out(8, '\0');
  out[1] = static_cast<char>(data.size() & 0xFF);
  out[2] = static_cast<char>((data.size() >> 8) & 0xFF);
  out[3] = static_cast<char>((data.size() >> 16) & 0xFF);
  out[4] = static_cast<char>(scheme);
  out[5] = static_cast<char>(chunk.size() & 0xFF);
  out[6] = static_cast<char>((chunk.size() >> 8) & 0xFF);
  out[7] = static_cast<char>((chunk.size() >> 16) & 0xFF);
  return out + data;
}

// "bytes=a-b,c-d" → the ranges (inclusive); nullopt unless every one is within `size`.
std::optional<std::vector<std::pair<std::uint64_t, std::uint64_t>>> parse_ranges(
    const std::string& header, std::uint64_t size) {
  if (!header.starts_with("bytes=")) return std::nullopt;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  std::string_view rest(header);
  rest.remove_prefix(6);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view spec = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const auto dash = spec.find('-');
    if (dash == std::string_view::npos) return std::nullopt;
    std::uint64_t first = 0, last = 0;
    if (std::from_chars(spec.data(), spec.data() + dash, first).ec != std::errc() ||
        std::from_chars(spec.data() + dash + 1, spec.data() + spec.size(), last).ec !=
            std::errc() ||
        first > last || last >= size) {
      return std::nullopt;
    }
    ranges.emplace_back(first, last);
  }
  if (ranges.empty()) return std::nullopt;
  return ranges;
}

}  // namespace

XetStore::XetStore(Recorder record) : record_(std::move(record)) {
  for (httplib::Server* server : {&cas_, &transfer_}) {
    server->new_task_queue = [] { return new httplib::ThreadPool(32); };
    server->set_tcp_nodelay(true);
  }
  install_cas_routes();
  install_transfer_routes();
  cas_port_ = cas_.bind_to_any_port("127.0.0.1");
  transfer_port_ = transfer_.bind_to_any_port("127.0.0.1");
  if (cas_port_ <= 0 || transfer_port_ <= 0) throw std::runtime_error("xet store cannot listen");
  cas_thread_ = std::thread([this] { cas_.listen_after_bind(); });
  transfer_thread_ = std::thread([this] { transfer_.listen_after_bind(); });
}

XetStore::~XetStore() {
  cas_.stop();
  transfer_.stop();
  cas_thread_.join();
  transfer_thread_.join();
}

std::string XetStore::add_file(const std::function<std::string(std::uint64_t, std::size_t)>& bytes,
                               std::uint64_t size, const XetLayout& layout) {
  StoredFile file;
  file.max_ranges_per_url = std::max<std::size_t>(1, layout.max_ranges_per_url);
  std::string chunk_hashes;
  std::optional<std::size_t> open_xorb;
  std::size_t chunk_number = 0;
  std::lock_guard lock(mutex_);
  auto store_chunk = [&](std::string_view chunk) {
    const std::string hash = sha256(chunk);
    chunk_hashes += hash;
    if (const auto found = chunk_by_hash_.find(hash); found != chunk_by_hash_.end()) {
      file.chunks.push_back(found->second);  // deduplicated: stored once, wherever it was
      return;
    }
    if (!open_xorb || xorbs_[*open_xorb].chunks.size() >= layout.xorb_max_chunks ||
        xorbs_[*open_xorb].bytes->size() >= kXorbMaxBytes) {
      open_xorb = xorbs_.size();
      xorbs_.emplace_back();
    }
    Xorb& xorb = xorbs_[*open_xorb];
    int scheme = 0;
    switch (layout.compression) {
      case XetCompression::none:
        scheme = 0;
        break;
      case XetCompression::lz4:
        scheme = 1;
        break;
      case XetCompression::byte_grouping4_lz4:
        scheme = 2;
        break;
      case XetCompression::rotating:
        scheme = static_cast<int>(chunk_number % 3);
        break;
    }
    ++chunk_number;
    if (layout.unused_chunk_every > 0 && chunk_number % layout.unused_chunk_every == 0) {
      const std::string filler = "unused chunk " + hash;
      const std::uint64_t at = xorb.bytes->size();
      *xorb.bytes += encode_chunk(filler, 0);
      xorb.chunks.push_back({at, xorb.bytes->size(), static_cast<std::uint32_t>(filler.size())});
    }
    const std::uint64_t begin = xorb.bytes->size();
    *xorb.bytes += encode_chunk(chunk, scheme);
    xorb.chunks.push_back({begin, xorb.bytes->size(), static_cast<std::uint32_t>(chunk.size())});
    const Chunk where{*open_xorb, static_cast<std::uint32_t>(xorb.chunks.size() - 1)};
    file.chunks.push_back(where);
    chunk_by_hash_.emplace(hash, where);
  };
  // Chunk boundaries: every 64 KiB, or where a gear hash of the content says (8–128 KiB).
  std::string chunk;
  std::uint64_t rolling = 0;
  for (std::uint64_t offset = 0; offset < size;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(1 << 20, size - offset));
    const std::string piece = bytes(offset, n);
    offset += n;
    for (const char c : piece) {
      chunk += c;
      bool cut = false;
      if (layout.chunking == XetChunking::fixed) {
        cut = chunk.size() == kFixedChunk;
      } else {
        rolling = (rolling << 1) + gear(static_cast<unsigned char>(c));
        cut = (chunk.size() >= kMinChunk && (rolling >> 48) == 0) || chunk.size() == kMaxChunk;
      }
      if (cut) {
        store_chunk(chunk);
        chunk.clear();
        rolling = 0;
      }
    }
  }
  if (!chunk.empty()) store_chunk(chunk);
  for (auto& xorb : xorbs_) {
    if (xorb.hash.empty()) xorb.hash = sha256(*xorb.bytes);
  }
  const std::string file_hash = sha256("xet-file:" + chunk_hashes);
  files_[file_hash] = std::move(file);
  return file_hash;
}

std::string XetStore::cas_url() const {
  return fmt::format("http://localhost:{}", cas_port_);
}

std::pair<std::string, std::int64_t> XetStore::issue_token() {
  std::lock_guard lock(mutex_);
  const std::int64_t expires =
      std::chrono::duration_cast<std::chrono::seconds>(SystemClock::now().time_since_epoch())
          .count() +
      token_lifetime_.count();
  std::string token =
      fmt::format("xet-read-{}-{}", ++token_counter_, sha256(std::to_string(expires)).substr(0, 8));
  tokens_[token] = expires;
  return {token, expires};
}

void XetStore::set_token_lifetime(std::chrono::seconds lifetime) {
  std::lock_guard lock(mutex_);
  token_lifetime_ = lifetime;
}
void XetStore::set_url_lifetime(std::chrono::milliseconds lifetime) {
  std::lock_guard lock(mutex_);
  url_lifetime_ = lifetime;
}
void XetStore::set_v2_enabled(bool enabled) {
  std::lock_guard lock(mutex_);
  v2_enabled_ = enabled;
}
void XetStore::set_reconstruction_faults(XetFaults faults) {
  std::lock_guard lock(mutex_);
  reconstruction_faults_ = faults;
}
void XetStore::set_transfer_faults(XetFaults faults) {
  std::lock_guard lock(mutex_);
  transfer_faults_ = faults;
}
void XetStore::set_transfer_rate(std::uint64_t bytes_per_second) {
  std::lock_guard lock(mutex_);
  transfer_rate_ = bytes_per_second;
}
void XetStore::stop_cas() {
  std::lock_guard lock(mutex_);
  if (cas_stopped_) return;
  cas_stopped_ = true;
  cas_.stop();
}

std::optional<XetFaults> XetStore::take(std::optional<XetFaults>& faults) {
  if (!faults) return std::nullopt;
  XetFaults taken = *faults;
  if (--faults->times <= 0) faults.reset();
  return taken;
}

std::string XetStore::signed_url(const Xorb& xorb) const {
  const std::int64_t expires = unix_ms() + url_lifetime_.count();
  return fmt::format("http://127.0.0.1:{}/xorbs/{}?exp={}&sig={}", transfer_port_, xorb.hash,
                     expires, sha256(fmt::format("{}/{}", xorb.hash, expires)).substr(0, 16));
}

// Terms: runs of consecutive chunks of one xorb. Fetches: per xorb, the chunk ranges the terms
// use (merged), at most max_ranges_per_url to a URL.
std::string XetStore::reconstruction_json(const StoredFile& file, bool v2) const {
  struct TermRun {
    std::size_t xorb;
    std::uint32_t begin, end;
  };
  std::vector<TermRun> runs;
  for (const auto& chunk : file.chunks) {
    if (!runs.empty() && runs.back().xorb == chunk.xorb && runs.back().end == chunk.index) {
      ++runs.back().end;
    } else {
      runs.push_back({chunk.xorb, chunk.index, chunk.index + 1});
    }
  }
  Json terms = Json::array();
  std::map<std::size_t, std::vector<std::pair<std::uint32_t, std::uint32_t>>> used;
  for (const auto& run : runs) {
    const Xorb& xorb = xorbs_[run.xorb];
    std::uint64_t length = 0;
    for (auto i = run.begin; i < run.end; ++i) length += xorb.chunks[i].length;
    terms.push_back({{"hash", xorb.hash},
                     {"unpacked_length", length},
                     {"range", {{"start", run.begin}, {"end", run.end}}}});
    used[run.xorb].emplace_back(run.begin, run.end);
  }
  const std::size_t per_url = file.max_ranges_per_url;
  Json fetches = Json::object();
  for (auto& [index, ranges] : used) {
    std::sort(ranges.begin(), ranges.end());
    std::vector<std::pair<std::uint32_t, std::uint32_t>> merged;
    for (const auto& range : ranges) {
      if (!merged.empty() && range.first <= merged.back().second) {
        merged.back().second = std::max(merged.back().second, range.second);
      } else {
        merged.push_back(range);
      }
    }
    const Xorb& xorb = xorbs_[index];
    Json entries = Json::array();
    for (std::size_t i = 0; i < merged.size(); ++i) {
      const auto& [begin, end] = merged[i];
      const Json chunks = {{"start", begin}, {"end", end}};
      const Json bytes = {{"start", xorb.chunks[begin].begin},
                          {"end", xorb.chunks[end - 1].end - 1}};
      if (!v2) {
        entries.push_back({{"range", chunks}, {"url", signed_url(xorb)}, {"url_range", bytes}});
      } else {
        if (i % per_url == 0)
          entries.push_back({{"url", signed_url(xorb)}, {"ranges", Json::array()}});
        entries.back()["ranges"].push_back({{"chunks", chunks}, {"bytes", bytes}});
      }
    }
    fetches[xorb.hash] = entries;
  }
  return Json({{"offset_into_first_range", 0},
               {"terms", terms},
               {v2 ? "xorbs" : "fetch_info", fetches}})
      .dump();
}

void XetStore::install_cas_routes() {
  cas_.Get(R"(/(v1|v2)/reconstructions/([0-9a-f]+))", [this](const httplib::Request& request,
                                                             httplib::Response& response) {
    const bool v2 = request.matches[1].str() == "v2";
    std::unique_lock lock(mutex_);
    const std::string authorization = request.get_header_value("Authorization");
    const auto token = authorization.starts_with("Bearer ") ? tokens_.find(authorization.substr(7))
                                                            : tokens_.end();
    const std::int64_t now_s = unix_ms() / 1000;
    const auto faults = take(reconstruction_faults_);
    const auto file = files_.find(request.matches[2].str());
    if (token == tokens_.end() || token->second <= now_s) {
      response.status = 401;
      response.set_content(R"({"error":"invalid or expired token"})", "application/json");
    } else if (faults && faults->status != 0) {
      response.status = faults->status;
      if (faults->retry_after_s >= 0)
        response.set_header("Retry-After", std::to_string(faults->retry_after_s));
      response.set_content(R"({"error":"injected"})", "application/json");
    } else if (v2 && !v2_enabled_) {
      response.status = 404;
      response.set_content(R"({"error":"not found"})", "application/json");
    } else if (file == files_.end()) {
      response.status = 404;
      response.set_content(R"({"error":"file not found"})", "application/json");
    } else {
      ++reconstructions_;
      response.set_content(reconstruction_json(file->second, v2), "application/json");
    }
    lock.unlock();
    record_("cas", request, response.status);
  });
}

void XetStore::install_transfer_routes() {
  transfer_.Get(R"(/xorbs/([0-9a-f]{64}))", [this](const httplib::Request& request,
                                                   httplib::Response& response) {
    const_cast<httplib::Request&>(request).ranges.clear();  // answered here, not by httplib
    std::unique_lock lock(mutex_);
    const std::string hash = request.matches[1].str();
    const auto xorb =
        std::find_if(xorbs_.begin(), xorbs_.end(), [&](const Xorb& x) { return x.hash == hash; });
    const std::string exp = request.get_param_value("exp");
    const std::string sig = request.get_param_value("sig");
    const auto faults = take(transfer_faults_);
    std::int64_t expires = 0;
    std::from_chars(exp.data(), exp.data() + exp.size(), expires);
    if (xorb == xorbs_.end() || sig != sha256(fmt::format("{}/{}", hash, exp)).substr(0, 16)) {
      response.status = 404;
      response.set_content("no such xorb", "text/plain");
    } else if (expires < unix_ms() || (faults && faults->status == 403)) {
      response.status = 403;
      response.set_content("Request has expired", "text/plain");
    } else if (faults && faults->status != 0) {
      response.status = faults->status;
      if (faults->retry_after_s >= 0)
        response.set_header("Retry-After", std::to_string(faults->retry_after_s));
      response.set_content("injected failure", "text/plain");
    } else if (const auto ranges =
                   parse_ranges(request.get_header_value("Range"), xorb->bytes->size());
               !ranges) {
      response.status = 416;  // a Range is mandatory (DESIGN §15)
      response.set_content("a Range within the xorb is required", "text/plain");
    } else {
      // The answer is a list of pieces: the xorb's own bytes (never copied: a 64 MiB copy
      // per request made the fixture, not the hive, the bottleneck) and multipart headers.
      struct Piece {
        std::shared_ptr<const std::string> data;
        std::size_t offset = 0;
        std::size_t length = 0;
        bool is_data = false;
      };
      auto pieces = std::make_shared<std::vector<Piece>>();
      const auto text = [&](std::string value) {
        auto shared = std::make_shared<const std::string>(std::move(value));
        pieces->push_back({shared, 0, shared->size(), false});
      };
      const std::uint64_t size = xorb->bytes->size();
      if (ranges->size() == 1) {
        const auto [first, last] = ranges->front();
        pieces->push_back({xorb->bytes, first, last - first + 1, true});
        response.set_header("Content-Range", fmt::format("bytes {}-{}/{}", first, last, size));
      } else {
        for (const auto& [first, last] : *ranges) {
          text(
              fmt::format("\r\n--{}\r\nContent-Type: application/octet-stream\r\n"
                          "Content-Range: bytes {}-{}/{}\r\n\r\n",
                          kBoundary, first, last, size));
          pieces->push_back({xorb->bytes, first, last - first + 1, true});
        }
        text(fmt::format("\r\n--{}--\r\n", kBoundary));
      }
      std::size_t total = 0;
      for (const auto& piece : *pieces) total += piece.length;
      response.status = 206;
      const std::string type = ranges->size() == 1
                                   ? "application/octet-stream"
                                   : fmt::format("multipart/byteranges; boundary={}", kBoundary);
      const std::uint64_t rate = transfer_rate_;
      const auto drop = faults ? faults->drop_after_bytes : std::nullopt;
      const auto started = std::chrono::steady_clock::now();
      response.set_content_provider(
          total, type,
          [this, pieces, rate, drop, started](std::size_t offset, std::size_t wanted,
                                              httplib::DataSink& sink) {
            if (drop && offset >= *drop) return false;
            std::size_t n = std::min<std::size_t>(wanted, 64 << 10);
            if (drop) n = std::min<std::uint64_t>(n, *drop - offset);
            // The piece holding `offset`, and at most the rest of it.
            std::size_t at = 0;
            const Piece* piece = nullptr;
            for (const auto& candidate : *pieces) {
              if (offset < at + candidate.length) {
                piece = &candidate;
                break;
              }
              at += candidate.length;
            }
            if (!piece) return false;
            const std::size_t within = offset - at;
            n = std::min(n, piece->length - within);
            if (rate > 0) {
              std::this_thread::sleep_until(
                  started + std::chrono::microseconds((offset + n) * 1000000 / rate));
            }
            if (!sink.write(piece->data->data() + piece->offset + within, n)) return false;
            if (piece->is_data) transfer_bytes_ += n;
            return true;
          });
    }
    lock.unlock();
    record_("transfer", request, response.status);
  });
}

}  // namespace rbee::testing
