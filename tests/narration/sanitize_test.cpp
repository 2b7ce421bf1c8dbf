#include <doctest/doctest.h>
#include <rbee/narration/sanitize.hpp>

#include <nlohmann/json.hpp>

using rbee::narration::dump_json;
using rbee::narration::sanitize;

TEST_CASE("sanitize keeps printable UTF-8 as it is") {
  CHECK(sanitize("org/model.Q4_K_M.gguf") == "org/model.Q4_K_M.gguf");
  CHECK(sanitize("caf\xc3\xa9 \xe2\x9c\x85") == "caf\xc3\xa9 \xe2\x9c\x85");
}

TEST_CASE("sanitize replaces invalid UTF-8, overlong forms and surrogates with U+FFFD") {
  CHECK(sanitize("a\xff"
                 "b") ==
        "a\xef\xbf\xbd"
        "b");
  CHECK(sanitize("\xc0\xaf") == "\xef\xbf\xbd\xef\xbf\xbd");                  // overlong '/'
  CHECK(sanitize("\xed\xa0\x80") == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // a surrogate
  CHECK(sanitize("\xe2\x82") == "\xef\xbf\xbd\xef\xbf\xbd");                  // cut short
}

TEST_CASE("sanitize removes terminal control: C0, DEL, C1, ESC sequences and bidi overrides") {
  const std::string out = sanitize(
      "red\x1b[31m\x07\x7f\xc2\x9b"
      "x\xe2\x80\xae"
      "y");
  CHECK(out.find('\x1b') == std::string::npos);
  CHECK(out.find('\x07') == std::string::npos);
  CHECK(out.find('\x7f') == std::string::npos);
  CHECK(out.find("\xc2\x9b") == std::string::npos);
  CHECK(out.find("\xe2\x80\xae") == std::string::npos);
  CHECK(sanitize("two\nlines\tand\rtab") == "two lines and tab");
}

TEST_CASE("sanitize bounds the length at a character boundary and marks the cut") {
  const std::string long_text(5000, 'a');
  const std::string out = sanitize(long_text, 100);
  CHECK(out.size() <= 100);
  CHECK(out.ends_with("\xe2\x80\xa6"));
  const std::string accents = sanitize(std::string(300, 'a') + std::string(200, '\xc3'), 10);
  CHECK(accents.size() <= 10);
  CHECK(sanitize("exactly", 7) == "exactly");
}

TEST_CASE("dump_json never throws on invalid UTF-8") {
  const nlohmann::json value = {{"message", std::string("bad \xff byte")}};
  CHECK_THROWS(value.dump());
  const std::string text = dump_json(value);
  CHECK_FALSE(nlohmann::json::parse(text, nullptr, false).is_discarded());
}
