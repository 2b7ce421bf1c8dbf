#pragma once
// The two formats a Xet download reads from outside (DESIGN §15), both untrusted: the CAS's
// reconstruction JSON and the chunks of a xorb. Neither reader ever throws anything but
// XetFormatError, whatever the bytes; both are fuzzed (tests/fuzz).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace rbee::provisioner::xet {

class XetFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Chunks [begin, end) of one xorb.
struct ChunkRange {
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
  bool contains(const ChunkRange& other) const { return begin <= other.begin && other.end <= end; }
  bool operator==(const ChunkRange&) const = default;
};

// One piece of the file, in file order: chunks of a xorb, `unpacked_length` bytes once decoded.
struct Term {
  std::string xorb;  // 64 lowercase hex digits
  ChunkRange chunks;
  std::uint64_t unpacked_length = 0;
};

// Bytes [first, last] of a xorb (as in a Range header), holding exactly `chunks`.
struct XorbByteRange {
  ChunkRange chunks;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};

// One presigned GET: every range of it in one Range header (v2), or exactly one (v1).
struct XorbFetch {
  std::string xorb;
  std::string url;
  std::vector<XorbByteRange> ranges;  // sorted by chunk, not overlapping
};

struct Reconstruction {
  std::uint64_t offset_into_first_range = 0;
  std::vector<Term> terms;
  std::vector<XorbFetch> fetches;
};

struct ReconstructionLimits {
  // Of the JSON: a fresh 500 GB upload lists ~8 k terms (a few MB); deduplicated files list
  // more. It is parsed whole, so the cap bounds what a hostile CAS can make the hive hold.
  std::size_t max_bytes = 32 << 20;
  std::size_t max_terms = 4 << 20;
  std::uint64_t max_file_bytes = 1ULL << 44;
};

enum class ReconstructionVersion { v1, v2 };

// Parses and checks a reconstruction: hashes are 64 hex digits, chunk ranges are non-empty,
// URLs are http(s), byte ranges ordered, and every term falls inside one range of one fetch of
// its xorb (the term can then be fetched). The terms' lengths must add up to
// `offset_into_first_range + file_size`. Messages never echo the input.
Reconstruction parse_reconstruction(std::string_view json, ReconstructionVersion version,
                                    std::uint64_t file_size, const ReconstructionLimits& limits);

// A chunk's 8-byte header (DESIGN §15).
inline constexpr std::size_t kChunkHeaderBytes = 8;
enum class ChunkScheme : std::uint8_t { none = 0, lz4 = 1, byte_grouping4_lz4 = 2 };

// Decodes a run of chunks as their bytes arrive, one chunk in memory at a time: each decoded
// chunk is handed to `on_chunk` in order. Throws XetFormatError on a bad header, an unknown
// scheme, or data that does not decode to the length the header promised.
class ChunkDecoder {
 public:
  using ChunkSink = std::function<void(std::string_view chunk)>;
  explicit ChunkDecoder(ChunkSink on_chunk);

  void feed(const char* data, std::size_t length);
  // True between chunks (nothing of a next chunk received yet).
  bool at_boundary() const { return state_ == State::header && header_fill_ == 0; }

 private:
  enum class State { header, data };
  void start_chunk();
  void finish_chunk();

  ChunkSink on_chunk_;
  State state_ = State::header;
  unsigned char header_[kChunkHeaderBytes] = {};
  std::size_t header_fill_ = 0;
  ChunkScheme scheme_ = ChunkScheme::none;
  std::size_t compressed_length_ = 0;
  std::size_t uncompressed_length_ = 0;
  std::string compressed_;    // this chunk's data as received
  std::string decompressed_;  // and decoded (reused: constant memory)
  std::string regrouped_;
};

// Decodes one chunk's data (no header): for tests and for the fuzzer.
void decode_chunk_data(ChunkScheme scheme, std::string_view data, std::size_t uncompressed_length,
                       std::string& out, std::string& scratch);

// Reads a `multipart/byteranges` body as it arrives: each part's bytes go to `on_part_data`
// with the offset the part's Content-Range gives. Parts over 64 KiB of headers, or without a
// Content-Range, end it with XetFormatError.
class ByteRangesReader {
 public:
  using PartSink = std::function<void(std::uint64_t offset, const char* data, std::size_t length)>;
  ByteRangesReader(std::string boundary, PartSink on_part_data);
  void feed(const char* data, std::size_t length);
  bool finished() const { return state_ == State::done; }

 private:
  enum class State { preamble, part_headers, part_body, after_part, done };
  bool parse_delimiter_or_headers();  // true when it moved to another state

  std::string boundary_;  // "--" + boundary
  PartSink on_part_data_;
  State state_ = State::preamble;
  std::string pending_;  // text not yet consumed (delimiters and headers only)
  std::uint64_t part_offset_ = 0;
  std::uint64_t part_left_ = 0;
};

// The boundary of a `multipart/byteranges; boundary=…` Content-Type; "" when it is not one.
std::string byteranges_boundary(std::string_view content_type);

}  // namespace rbee::provisioner::xet
