#pragma once
// XetStore: the Hub fixture's Xet storage (DESIGN §15), built from the public spec: a CAS that
// answers reconstructions (v2, and v1), and a transfer server for presigned xorb URLs with
// single and multipart range answers. Files are cut into chunks (fixed or content-defined),
// each chunk compressed with one of the three schemes; a chunk stored before (by any file) is
// referenced where it is, never stored twice, so a new revision's reconstruction reuses the old
// xorbs for every unchanged chunk, as the Hub's deduplication does.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace rbee::testing {

enum class XetChunking { fixed, content_defined };
enum class XetCompression { none, lz4, byte_grouping4_lz4, rotating };  // rotating: all three

struct XetLayout {
  XetChunking chunking = XetChunking::content_defined;
  XetCompression compression = XetCompression::rotating;
  std::size_t max_ranges_per_url = 4;  // a v2 fetch entry holds at most so many ranges
  std::size_t xorb_max_chunks = 1024;  // new chunks go to a new xorb after so many
  // After every so many chunks of this file, a chunk of no file: the file then uses several
  // separate ranges of each xorb, as when xorbs are shared (multi-range answers); 0: none.
  std::size_t unused_chunk_every = 16;
};

// Faults for the next `times` requests of a kind (reconstructions, or transfers).
struct XetFaults {
  int times = 1;
  int status = 0;  // answer this (401, 403, 404, 429, 503…) instead
  int retry_after_s = -1;
  std::optional<std::uint64_t> drop_after_bytes;  // a transfer: close after N body bytes
};

class XetStore {
 public:
  using Recorder =
      std::function<void(const std::string& listener, const httplib::Request&, int status)>;
  explicit XetStore(Recorder record);
  ~XetStore();
  XetStore(const XetStore&) = delete;
  XetStore& operator=(const XetStore&) = delete;

  // Stores a file of `size` bytes whose content `bytes(offset, n)` gives; returns its Xet hash.
  std::string add_file(const std::function<std::string(std::uint64_t, std::size_t)>& bytes,
                       std::uint64_t size, const XetLayout& layout);

  std::string cas_url() const;  // http://localhost:<port> (another host name than the Hub's)
  int transfer_port() const { return transfer_port_; }
  // A new access token, valid for the token lifetime.
  std::pair<std::string, std::int64_t> issue_token();

  void set_token_lifetime(std::chrono::seconds lifetime);
  void set_url_lifetime(std::chrono::milliseconds lifetime);
  void set_v2_enabled(bool enabled);  // false: /v2 answers 404, as a CAS that predates it
  void set_reconstruction_faults(XetFaults faults);
  void set_transfer_faults(XetFaults faults);
  void set_transfer_rate(std::uint64_t bytes_per_second);  // per answer; 0: unpaced
  void stop_cas();                                         // the CAS stops listening: unreachable

  std::uint64_t transfer_bytes_sent() const { return transfer_bytes_.load(); }
  int reconstructions_served() const { return reconstructions_.load(); }

 private:
  struct Chunk {
    std::size_t xorb = 0;
    std::uint32_t index = 0;
  };
  struct StoredChunk {
    std::uint64_t begin = 0;  // in the xorb's bytes, header included
    std::uint64_t end = 0;
    std::uint32_t length = 0;  // decoded
  };
  struct Xorb {
    std::string hash;
    // Shared with the answers being sent, which read it unlocked: only the add_file call that
    // created the xorb ever appends to it.
    std::shared_ptr<std::string> bytes = std::make_shared<std::string>();
    std::vector<StoredChunk> chunks;
  };
  struct StoredFile {
    std::vector<Chunk> chunks;
    std::size_t max_ranges_per_url = 4;
  };

  void install_cas_routes();
  void install_transfer_routes();
  std::string reconstruction_json(const StoredFile& file, bool v2) const;
  std::string signed_url(const Xorb& xorb) const;
  std::optional<XetFaults> take(std::optional<XetFaults>& faults);

  Recorder record_;
  mutable std::mutex mutex_;
  std::vector<Xorb> xorbs_;
  std::map<std::string, Chunk> chunk_by_hash_;
  std::map<std::string, StoredFile> files_;     // by Xet hash
  std::map<std::string, std::int64_t> tokens_;  // token → expiry (unix seconds)
  std::chrono::seconds token_lifetime_{3600};
  std::chrono::milliseconds url_lifetime_{3600000};
  bool v2_enabled_ = true;
  std::optional<XetFaults> reconstruction_faults_;
  std::optional<XetFaults> transfer_faults_;
  std::uint64_t transfer_rate_ = 0;
  std::atomic<std::uint64_t> transfer_bytes_{0};
  std::atomic<int> reconstructions_{0};
  std::uint64_t token_counter_ = 0;

  httplib::Server cas_;
  httplib::Server transfer_;
  int cas_port_ = 0;
  int transfer_port_ = 0;
  std::thread cas_thread_;
  std::thread transfer_thread_;
  bool cas_stopped_ = false;
};

}  // namespace rbee::testing
