#include "xet/xet_format.hpp"

#include <lz4frame.h>

#include <algorithm>
#include <cctype>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "rbee/provisioner/content_range.hpp"

namespace rbee::provisioner::xet {
namespace {

using Json = nlohmann::json;

// Xet chunks are at most 128 KiB; 1 MiB leaves room for any future chunker while a hostile
// header can never make a connection hold more than a few MiB.
constexpr std::size_t kMaxChunkBytes = 1 << 20;
constexpr std::size_t kMaxPartHeaderBytes = 64 << 10;

[[noreturn]] void reject(const std::string& why) {
  throw XetFormatError("the reconstruction is not usable: " + why);
}

bool is_hash(const std::string& text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](unsigned char c) {
           return std::isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

std::string xorb_hash(const std::string& text) {
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!is_hash(lower)) reject("a xorb hash is not 64 hex digits");
  return lower;
}

std::uint64_t unsigned_field(const Json& object, const char* name, std::uint64_t max) {
  const auto found = object.find(name);
  if (found == object.end() || !found->is_number_unsigned()) {
    reject(fmt::format("\"{}\" is missing or not a non-negative integer", name));
  }
  const auto value = found->get<std::uint64_t>();
  if (value > max) reject(fmt::format("\"{}\" is out of range", name));
  return value;
}

const Json& object_field(const Json& object, const char* name) {
  const auto found = object.find(name);
  if (found == object.end() || !found->is_object()) {
    reject(fmt::format("\"{}\" is missing or not an object", name));
  }
  return *found;
}

const Json& array_field(const Json& object, const char* name) {
  const auto found = object.find(name);
  if (found == object.end() || !found->is_array()) {
    reject(fmt::format("\"{}\" is missing or not an array", name));
  }
  return *found;
}

ChunkRange chunk_range(const Json& object, const char* name) {
  const Json& range = object_field(object, name);
  ChunkRange chunks{static_cast<std::uint32_t>(unsigned_field(range, "start", UINT32_MAX)),
                    static_cast<std::uint32_t>(unsigned_field(range, "end", UINT32_MAX))};
  if (chunks.begin >= chunks.end) reject("a chunk range is empty");
  return chunks;
}

XorbByteRange byte_range(const Json& object, const char* chunks_name, const char* bytes_name) {
  const Json& bytes = object_field(object, bytes_name);
  XorbByteRange range{chunk_range(object, chunks_name), unsigned_field(bytes, "start", 1ULL << 48),
                      unsigned_field(bytes, "end", 1ULL << 48)};
  if (range.first > range.last) reject("a byte range ends before it starts");
  return range;
}

std::string fetch_url(const Json& object) {
  const auto url = object.find("url");
  if (url == object.end() || !url->is_string()) reject("a fetch has no \"url\"");
  const auto& text = url->get_ref<const std::string&>();
  if (!text.starts_with("http://") && !text.starts_with("https://")) {
    reject("a fetch URL is not http(s)");
  }
  if (text.size() > 16384) reject("a fetch URL is longer than 16 KiB");
  return text;
}

void read_fetches(const Json& json, ReconstructionVersion version, Reconstruction& out) {
  const Json& by_xorb =
      object_field(json, version == ReconstructionVersion::v2 ? "xorbs" : "fetch_info");
  for (const auto& [key, entries] : by_xorb.items()) {
    const std::string xorb = xorb_hash(key);
    if (!entries.is_array()) reject("a xorb's fetches are not an array");
    for (const auto& entry : entries) {
      if (!entry.is_object()) reject("a fetch is not an object");
      XorbFetch fetch{xorb, fetch_url(entry), {}};
      if (version == ReconstructionVersion::v1) {
        fetch.ranges.push_back(byte_range(entry, "range", "url_range"));
      } else {
        for (const auto& range : array_field(entry, "ranges")) {
          if (!range.is_object()) reject("a fetch range is not an object");
          fetch.ranges.push_back(byte_range(range, "chunks", "bytes"));
        }
        if (fetch.ranges.empty()) reject("a fetch has no ranges");
      }
      std::sort(fetch.ranges.begin(), fetch.ranges.end(),
                [](const auto& a, const auto& b) { return a.chunks.begin < b.chunks.begin; });
      for (std::size_t i = 1; i < fetch.ranges.size(); ++i) {
        if (fetch.ranges[i].chunks.begin < fetch.ranges[i - 1].chunks.end ||
            fetch.ranges[i].first <= fetch.ranges[i - 1].last) {
          reject("the ranges of a fetch overlap");
        }
      }
      out.fetches.push_back(std::move(fetch));
      if (out.fetches.size() > out.terms.size() + 1024)
        reject("it lists far more fetches than terms");
    }
  }
}

bool term_is_fetchable(const Term& term, const std::vector<XorbFetch>& fetches) {
  for (const auto& fetch : fetches) {
    if (fetch.xorb != term.xorb) continue;
    for (const auto& range : fetch.ranges) {
      if (range.chunks.contains(term.chunks)) return true;
    }
  }
  return false;
}

}  // namespace

Reconstruction parse_reconstruction(std::string_view text, ReconstructionVersion version,
                                    std::uint64_t file_size, const ReconstructionLimits& limits) {
  if (text.size() > limits.max_bytes) reject("it is larger than the limit");
  const Json json = Json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object()) reject("it is not a JSON object");
  Reconstruction out;
  out.offset_into_first_range =
      unsigned_field(json, "offset_into_first_range", limits.max_file_bytes);
  const Json& terms = array_field(json, "terms");
  if (terms.size() > limits.max_terms) reject("it has too many terms");
  std::uint64_t total = 0;
  for (const auto& entry : terms) {
    if (!entry.is_object()) reject("a term is not an object");
    const auto hash = entry.find("hash");
    if (hash == entry.end() || !hash->is_string()) reject("a term has no \"hash\"");
    Term term{xorb_hash(hash->get<std::string>()), chunk_range(entry, "range"),
              unsigned_field(entry, "unpacked_length", limits.max_file_bytes)};
    if (term.unpacked_length == 0) reject("a term is empty");
    total += term.unpacked_length;
    if (total > limits.max_file_bytes + out.offset_into_first_range)
      reject("the terms are too long");
    out.terms.push_back(std::move(term));
  }
  if (total != out.offset_into_first_range + file_size) {
    reject("the terms do not add up to the file's size");
  }
  if (!out.terms.empty() && out.offset_into_first_range >= out.terms.front().unpacked_length) {
    reject("the offset into the first term is past its end");
  }
  read_fetches(json, version, out);
  for (const auto& term : out.terms) {
    if (!term_is_fetchable(term, out.fetches)) reject("a term has no fetch covering its chunks");
  }
  return out;
}

void decode_chunk_data(ChunkScheme scheme, std::string_view data, std::size_t uncompressed_length,
                       std::string& out, std::string& scratch) {
  if (scheme == ChunkScheme::none) {
    if (data.size() != uncompressed_length) {
      throw XetFormatError("an uncompressed chunk's length disagrees with its header");
    }
    out.assign(data);
    return;
  }
  std::string& decompressed = scheme == ChunkScheme::lz4 ? out : scratch;
  decompressed.resize(uncompressed_length);
  LZ4F_dctx* raw = nullptr;
  if (LZ4F_isError(LZ4F_createDecompressionContext(&raw, LZ4F_VERSION))) {
    throw std::bad_alloc();
  }
  const std::unique_ptr<LZ4F_dctx, decltype(&LZ4F_freeDecompressionContext)> context(
      raw, LZ4F_freeDecompressionContext);
  std::size_t consumed = 0, produced = 0, hint = 1;
  while (hint != 0) {
    std::size_t source_left = data.size() - consumed;
    std::size_t room = decompressed.size() - produced;
    hint = LZ4F_decompress(context.get(), decompressed.data() + produced, &room,
                           data.data() + consumed, &source_left, nullptr);
    if (LZ4F_isError(hint)) throw XetFormatError("a chunk is not a valid LZ4 frame");
    consumed += source_left;
    produced += room;
    // No input left but the frame is not over, or no room left for what it still holds.
    if (hint != 0 && ((consumed == data.size() && source_left == 0) ||
                      (produced == decompressed.size() && room == 0 && source_left == 0))) {
      throw XetFormatError("a chunk's LZ4 frame is truncated or longer than its header says");
    }
  }
  if (produced != uncompressed_length || consumed != data.size()) {
    throw XetFormatError("a chunk's LZ4 frame does not match its header's lengths");
  }
  if (scheme == ChunkScheme::lz4) return;
  // Byte grouping 4: plane i holds bytes i, i+4, i+8… of the chunk.
  out.resize(uncompressed_length);
  const std::size_t planes = 4;
  std::size_t source = 0;
  for (std::size_t plane = 0; plane < planes; ++plane) {
    for (std::size_t at = plane; at < uncompressed_length; at += planes)
      out[at] = scratch[source++];
  }
}

ChunkDecoder::ChunkDecoder(ChunkSink on_chunk) : on_chunk_(std::move(on_chunk)) {}

void ChunkDecoder::feed(const char* data, std::size_t length) {
  while (length > 0) {
    if (state_ == State::header) {
      const std::size_t take = std::min(length, kChunkHeaderBytes - header_fill_);
      std::copy_n(data, take, header_ + header_fill_);
      header_fill_ += take;
      data += take;
      length -= take;
      if (header_fill_ == kChunkHeaderBytes) start_chunk();
      continue;
    }
    const std::size_t take = std::min(length, compressed_length_ - compressed_.size());
    compressed_.append(data, take);
    data += take;
    length -= take;
    if (compressed_.size() == compressed_length_) finish_chunk();
  }
}

void ChunkDecoder::start_chunk() {
  if (header_[0] != 0) throw XetFormatError("a chunk header has an unknown version");
  compressed_length_ = header_[1] | (header_[2] << 8) | (header_[3] << 16);
  uncompressed_length_ = header_[5] | (header_[6] << 8) | (header_[7] << 16);
  if (header_[4] > 2) throw XetFormatError("a chunk uses an unknown compression scheme");
  scheme_ = static_cast<ChunkScheme>(header_[4]);
  if (compressed_length_ == 0 || uncompressed_length_ == 0 || compressed_length_ > kMaxChunkBytes ||
      uncompressed_length_ > kMaxChunkBytes) {
    throw XetFormatError("a chunk header gives an empty or oversized chunk");
  }
  compressed_.clear();
  state_ = State::data;
}

void ChunkDecoder::finish_chunk() {
  decode_chunk_data(scheme_, compressed_, uncompressed_length_, decompressed_, regrouped_);
  state_ = State::header;
  header_fill_ = 0;
  on_chunk_(decompressed_);
}

std::string byteranges_boundary(std::string_view content_type) {
  const auto semicolon = content_type.find(';');
  std::string_view type = content_type.substr(0, semicolon);
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  std::string lower(type);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower != "multipart/byteranges" || semicolon == std::string_view::npos) return "";
  const auto at = content_type.find("boundary=", semicolon);
  if (at == std::string_view::npos) return "";
  std::string_view boundary = content_type.substr(at + 9);
  boundary = boundary.substr(0, boundary.find(';'));
  if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"') {
    boundary = boundary.substr(1, boundary.size() - 2);
  }
  if (boundary.empty() || boundary.size() > 70) return "";
  return std::string(boundary);
}

ByteRangesReader::ByteRangesReader(std::string boundary, PartSink on_part_data)
    : boundary_("--" + std::move(boundary)), on_part_data_(std::move(on_part_data)) {}

void ByteRangesReader::feed(const char* data, std::size_t length) {
  while (state_ != State::done) {
    if (state_ == State::part_body) {
      // Body bytes that came in with the headers first, then the caller's.
      const bool from_pending = !pending_.empty();
      if (!from_pending && length == 0) return;
      const char* source = from_pending ? pending_.data() : data;
      const std::size_t available = from_pending ? pending_.size() : length;
      const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(available, part_left_));
      on_part_data_(part_offset_, source, take);
      part_offset_ += take;
      part_left_ -= take;
      if (from_pending) {
        pending_.erase(0, take);
      } else {
        data += take;
        length -= take;
      }
      if (part_left_ == 0) state_ = State::after_part;
      continue;
    }
    if (parse_delimiter_or_headers()) continue;
    if (length == 0) return;
    // Delimiters and headers are short: they are gathered, bounded, and parsed whole.
    if (pending_.size() > kMaxPartHeaderBytes) {
      throw XetFormatError("a multipart answer has oversized part headers");
    }
    const std::size_t take = std::min(length, kMaxPartHeaderBytes + 1 - pending_.size());
    pending_.append(data, take);
    data += take;
    length -= take;
  }
}

bool ByteRangesReader::parse_delimiter_or_headers() {
  if (state_ == State::preamble || state_ == State::after_part) {
    const auto at = pending_.find(boundary_);
    if (at == std::string::npos) return false;  // bounded by kMaxPartHeaderBytes
    // Only line breaks may sit between a part's body and the next delimiter.
    if (state_ == State::after_part && pending_.find_first_not_of("\r\n") < at) {
      throw XetFormatError("a multipart part is longer than its Content-Range");
    }
    if (pending_.size() < at + boundary_.size() + 2) return false;
    if (pending_.compare(at + boundary_.size(), 2, "--") == 0) {
      state_ = State::done;
      pending_.clear();
      return true;
    }
    pending_.erase(0, at + boundary_.size());
    state_ = State::part_headers;
    return true;
  }
  const auto end = pending_.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  std::optional<ContentRange> range;
  for (std::size_t line_start = 0; line_start < end;) {
    const auto line_end = pending_.find("\r\n", line_start);
    const std::string_view line(pending_.data() + line_start, line_end - line_start);
    line_start = line_end + 2;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (name != "content-range") continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    range = parse_content_range(value);
  }
  if (!range) throw XetFormatError("a multipart part has no valid Content-Range");
  part_offset_ = range->first;
  part_left_ = range->last - range->first + 1;
  pending_.erase(0, end + 4);  // what follows is the part's body
  state_ = State::part_body;
  return true;
}

}  // namespace rbee::provisioner::xet
