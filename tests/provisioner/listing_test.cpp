#include <doctest/doctest.h>
#include <rbee/provisioner/content_range.hpp>
#include <rbee/provisioner/hub_client.hpp>
#include <rbee/provisioner/listing.hpp>

#include <string>

using namespace rbee::provisioner;

namespace {

std::string listing_of(const std::string& siblings) {
  return R"({"id":"org/m","sha":"abc","siblings":[)" + siblings + "]}";
}

std::string rejection(const std::string& json, ListingLimits limits = {}) {
  try {
    parse_listing(json, limits);
  } catch (const HubError& error) {
    CHECK(error.kind() == HubErrorKind::protocol);
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a Hub listing gives the commit and every file with size, blob id and LFS hash") {
  const RepoInfo info = parse_listing(
      listing_of(R"({"rfilename":"config.json","size":613,"blobId":"b1","extra":[1,{"a":2}]},
                    {"rfilename":"model.gguf","size":134,"blobId":"b2",
                     "lfs":{"sha256":"cafe","size":2097155,"pointerSize":134}})"),
      {});
  CHECK(info.commit == "abc");
  REQUIRE(info.siblings.size() == 2);
  CHECK(info.siblings[0].path == "config.json");
  CHECK(info.siblings[0].size == 613);
  CHECK(info.siblings[0].lfs_sha256.empty());
  CHECK(info.siblings[1].size == 2097155);  // the LFS size, not the pointer's
  CHECK(info.siblings[1].lfs_sha256 == "cafe");
  CHECK(info.siblings[1].blob_id == "b2");
}

TEST_CASE("hostile sizes are refused: negative, fractional, huge, textual, missing") {
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":-1})")).find("negative") !=
        std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":1.5})")).find("whole number") !=
        std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":1e30})")).find("whole number") !=
        std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":18446744073709551615})"))
            .find("larger than any file") != std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":"12"})")).find("not a number") !=
        std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a"})")).find("no \"size\"") != std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":1,"lfs":{"size":-5}})")).find("negative") !=
        std::string::npos);
}

TEST_CASE("sizes that add up past any repo are refused, never wrapped") {
  std::string siblings;
  for (int i = 0; i < 70; ++i) {
    if (i) siblings += ",";
    siblings += R"({"rfilename":"f)" + std::to_string(i) + R"(","size":17592186044416})";
  }
  CHECK(rejection(listing_of(siblings)).find("add up") != std::string::npos);
}

TEST_CASE("duplicates, too many entries, too many bytes and broken shapes are refused") {
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":1},{"rfilename":"a","size":2})"))
            .find("twice") != std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":1},{"rfilename":"b","size":1})"),
                  {.max_entries = 1})
            .find("more than 1 files") != std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"a","size":1})"), {.max_bytes = 10})
            .find("larger than 10 bytes") != std::string::npos);
  CHECK(rejection("[1,2]").find("not a JSON object") != std::string::npos);
  CHECK(rejection(R"({"sha":"x"})").find("no \"siblings\"") != std::string::npos);
  CHECK(rejection(listing_of("5")).find("not an object") != std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":5,"size":1})")).find("not a string") !=
        std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":"","size":1})")).find("no \"rfilename\"") !=
        std::string::npos);
  CHECK(rejection(R"({"sha":"x","siblings":[{"rfilename":"a","size":1})").find("not valid JSON") !=
        std::string::npos);
  CHECK(rejection(listing_of(R"({"rfilename":")" + std::string(5000, 'a') + R"(","size":1})"))
            .find("longer than") != std::string::npos);
}

TEST_CASE("a redirect's Location is followed only to an http(s) URL or a path on the same origin") {
  const Url base = *parse_url("http://127.0.0.1:8080/api/models/old/name");
  CHECK(resolve_location(base, "/api/models/new/name")->origin() == base.origin());
  CHECK(resolve_location(base, "/api/models/new/name")->target == "/api/models/new/name");
  CHECK(resolve_location(base, "https://cdn.example/x?sig=1")->host == "cdn.example");
  CHECK_FALSE(resolve_location(base, "//evil.example/x"));
  CHECK_FALSE(resolve_location(base, "relative/path"));
  CHECK_FALSE(resolve_location(base, "ftp://host/x"));
  CHECK_FALSE(resolve_location(base, "/a b"));
  CHECK_FALSE(resolve_location(base, ""));
  CHECK_FALSE(resolve_location(base, "http://user@host/x"));
}

TEST_CASE("Content-Range is read strictly: the asked range of a file of the listed size") {
  const auto range = parse_content_range("bytes 100-199/1000");
  REQUIRE(range);
  CHECK(range->first == 100);
  CHECK(range->last == 199);
  CHECK(range->total == 1000u);
  CHECK(parse_content_range("bytes 0-9/*")->total == std::nullopt);
  for (const char* bad :
       {"", "bytes", "bytes 5-4/10", "bytes 0-10/10", "bytes -1-5/10", "bytes 0-5/10 ",
        "bytes 0-5/1x", "items 0-5/10", "bytes 0x1-5/10",
        "bytes 0-99999999999999999999/100000000000000000000", "bytes \xff\x1b[2J-/x"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_content_range(bad));
  }
  CHECK(content_range_matches("bytes 100-999/1000", 100, std::nullopt, 1000));
  CHECK_FALSE(content_range_matches("bytes 100-999/2000", 100, std::nullopt, 1000));  // size lie
  CHECK_FALSE(content_range_matches("bytes 0-999/1000", 100, std::nullopt, 1000));    // offset
  CHECK_FALSE(content_range_matches("bytes 100-499/1000", 100, std::nullopt, 1000));  // short
  CHECK(content_range_matches("bytes 100-499/1000", 100, 499, 1000));
}
