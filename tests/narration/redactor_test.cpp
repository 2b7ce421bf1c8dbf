#include <doctest/doctest.h>
#include <rbee/narration/redactor.hpp>

using rbee::narration::Redactor;

TEST_CASE("redactor removes a configured secret wherever it appears") {
  Redactor redactor;
  redactor.add_secret("s3cret-value");
  CHECK(redactor.redact("token=s3cret-value and again s3cret-value") ==
        "token=[REDACTED] and again [REDACTED]");
}

TEST_CASE("redactor removes Authorization and bearer values but keeps the label") {
  Redactor redactor;
  CHECK(redactor.redact("Authorization: Bearer abc.def") == "Authorization: Bearer [REDACTED]");
  CHECK(redactor.redact("authorization=xyz123") == "authorization=[REDACTED]");
  CHECK(redactor.redact("sent bearer qwerty123 to host") == "sent bearer [REDACTED] to host");
}

TEST_CASE("redactor removes Hugging Face shaped tokens even when not configured") {
  Redactor redactor;
  CHECK(redactor.redact("url?token=hf_AbCdEfGh12345678&x=1") == "url?token=[REDACTED]&x=1");
  CHECK(redactor.redact("hf_short") == "hf_short");  // too short to be a token
}

TEST_CASE("redactor leaves ordinary text alone and ignores tiny secrets") {
  Redactor redactor;
  redactor.add_secret("ab");
  CHECK(redactor.redact("a lab about tabs") == "a lab about tabs");
}

TEST_CASE("a secret that contains another is removed whole") {
  Redactor redactor;
  redactor.add_secret("abcd");
  redactor.add_secret("xxabcdxx");
  CHECK(redactor.redact("v=xxabcdxx") == "v=[REDACTED]");
}
