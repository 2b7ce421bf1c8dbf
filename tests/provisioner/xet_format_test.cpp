// The Xet formats (DESIGN §15): chunks in all three schemes, multipart answers, and the
// reconstruction JSON, including what a broken CAS or transfer server may send.
#include <doctest/doctest.h>
#include <lz4frame.h>

#include <string>

#include "xet/xet_format.hpp"

using namespace rbee::provisioner::xet;

namespace {

std::string lz4(const std::string& data) {
  std::string out(LZ4F_compressFrameBound(data.size(), nullptr), '\0');
  out.resize(LZ4F_compressFrame(out.data(), out.size(), data.data(), data.size(), nullptr));
  return out;
}

std::string chunk(const std::string& data, int scheme) {
  std::string body = data;
  if (scheme == 2) {
    body.clear();
    for (std::size_t plane = 0; plane < 4; ++plane)
      for (std::size_t at = plane; at < data.size(); at += 4) body += data[at];
  }
  if (scheme != 0) body = lz4(body);
  std::string header(8, '\0');
  header[1] = static_cast<char>(body.size() & 0xFF);
  header[2] = static_cast<char>((body.size() >> 8) & 0xFF);
  header[4] = static_cast<char>(scheme);
  header[5] = static_cast<char>(data.size() & 0xFF);
  header[6] = static_cast<char>((data.size() >> 8) & 0xFF);
  return header + body;
}

std::string decode_all(const std::string& bytes, std::size_t piece) {
  std::string out;
  ChunkDecoder decoder([&](std::string_view c) { out += c; });
  for (std::size_t at = 0; at < bytes.size(); at += piece) {
    decoder.feed(bytes.data() + at, std::min(piece, bytes.size() - at));
  }
  CHECK(decoder.at_boundary());
  return out;
}

const std::string kHash(64, 'a');

}  // namespace

TEST_CASE("chunks decode in every scheme, whatever pieces the bytes arrive in") {
  const std::string a = "The quick brown fox jumps over the lazy dog. 0123456789 — 17 bytes";
  const std::string b(5003, 'x');
  const std::string bytes = chunk(a, 0) + chunk(b, 1) + chunk(a + b, 2);
  for (std::size_t piece : {1, 7, 4096}) CHECK(decode_all(bytes, piece) == a + b + a + b);
}

TEST_CASE("a chunk that lies about its lengths, scheme or version is refused") {
  std::string bad_scheme = chunk("data", 0);
  bad_scheme[4] = 7;
  CHECK_THROWS_AS(decode_all(bad_scheme, 100), XetFormatError);
  std::string bad_length = chunk(std::string(100, 'q'), 1);
  bad_length[5] = 99;  // one byte fewer than the frame holds
  CHECK_THROWS_AS(decode_all(bad_length, 100), XetFormatError);
  std::string bad_version = chunk("data", 0);
  bad_version[0] = 1;
  CHECK_THROWS_AS(decode_all(bad_version, 100), XetFormatError);
  std::string not_lz4 = chunk("data", 0);
  not_lz4[4] = 1;
  CHECK_THROWS_AS(decode_all(not_lz4, 100), XetFormatError);
}

TEST_CASE("a multipart/byteranges answer gives each part's bytes at its offset") {
  CHECK(byteranges_boundary("multipart/byteranges; boundary=abc") == "abc");
  CHECK(byteranges_boundary("multipart/byteranges; boundary=\"q r\"") == "q r");
  CHECK(byteranges_boundary("application/octet-stream") == "");
  const std::string body =
      "\r\n--abc\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 2-5/20\r\n\r\n"
      "wxyz\r\n--abc\r\nContent-Range: bytes 10-11/20\r\n\r\nAB\r\n--abc--\r\n";
  for (std::size_t piece : {1, 3, 1000}) {
    std::string seen;
    ByteRangesReader reader("abc", [&](std::uint64_t offset, const char* data, std::size_t n) {
      seen += std::to_string(offset) + ":" + std::string(data, n) + ";";
    });
    for (std::size_t at = 0; at < body.size(); at += piece)
      reader.feed(body.data() + at, std::min(piece, body.size() - at));
    CHECK(reader.finished());
    CHECK(seen.find("2:w") != std::string::npos);  // pieces of a part arrive in order
    const bool second_part = seen.find("10:A") != std::string::npos;
    CHECK(second_part);
  }
  ByteRangesReader liar("abc", [](std::uint64_t, const char*, std::size_t) {});
  const std::string longer = "--abc\r\nContent-Range: bytes 0-1/9\r\n\r\nabcdef\r\n--abc--\r\n";
  CHECK_THROWS_AS(liar.feed(longer.data(), longer.size()), XetFormatError);
}

TEST_CASE("a reconstruction is accepted only when it adds up and every term can be fetched") {
  const std::string v2 =
      R"({"offset_into_first_range":0,"terms":[{"hash":")" + kHash +
      R"(","unpacked_length":10,"range":{"start":0,"end":2}}],"xorbs":{")" + kHash +
      R"(":[{"url":"http://x/y","ranges":[{"chunks":{"start":0,"end":3},"bytes":{"start":0,"end":40}}]}]}})";
  const auto plan = parse_reconstruction(v2, ReconstructionVersion::v2, 10, {});
  REQUIRE(plan.terms.size() == 1);
  CHECK(plan.fetches.front().ranges.front().last == 40);
  CHECK_THROWS_AS(parse_reconstruction(v2, ReconstructionVersion::v2, 11, {}), XetFormatError);
  CHECK_THROWS_AS(parse_reconstruction(v2, ReconstructionVersion::v1, 10, {}), XetFormatError);
  std::string uncovered = v2;
  uncovered.replace(uncovered.find("\"end\":3"), 7, "\"end\":1");
  CHECK_THROWS_AS(parse_reconstruction(uncovered, ReconstructionVersion::v2, 10, {}),
                  XetFormatError);
  std::string file_url = v2;
  file_url.replace(file_url.find("http://x/y"), 10, "file:///etc");
  CHECK_THROWS_AS(parse_reconstruction(file_url, ReconstructionVersion::v2, 10, {}),
                  XetFormatError);
  CHECK_THROWS_AS(parse_reconstruction("[]", ReconstructionVersion::v2, 10, {}), XetFormatError);
}
