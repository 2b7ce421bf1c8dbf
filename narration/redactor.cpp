#include "rbee/narration/redactor.hpp"

#include <algorithm>
#include <cctype>

namespace rbee::narration {
namespace {

// Secrets shorter than this would turn ordinary words into [REDACTED].
constexpr std::size_t kMinSecretLength = 4;
// Hugging Face user tokens are "hf_" and 30+ letters/digits; 8 catches truncated ones too.
constexpr std::size_t kMinHfTokenBody = 8;

bool is_space(char c) {
  return c == ' ' || c == '\t';
}
bool is_alnum(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}
// A credential value ends at white space, quotes or a separator.
bool ends_value(char c) {
  return std::isspace(static_cast<unsigned char>(c)) || c == '"' || c == '\'' || c == ',' ||
         c == ';';
}

bool matches_at(std::string_view text, std::size_t pos, std::string_view word) {
  if (pos + word.size() > text.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[pos + i])) != word[i]) return false;
  }
  return true;
}

std::size_t skip_spaces(std::string_view text, std::size_t pos) {
  while (pos < text.size() && is_space(text[pos])) ++pos;
  return pos;
}

// Where the credential value that starts at or after `pos` begins, if the text at `pos` is a
// label that introduces one: "authorization[:=] [scheme ]" or "bearer ".
std::size_t value_after_label(std::string_view text, std::size_t pos) {
  if (matches_at(text, pos, "authorization")) {
    std::size_t at = skip_spaces(text, pos + 13);
    if (at >= text.size() || (text[at] != ':' && text[at] != '=')) return std::string_view::npos;
    at = skip_spaces(text, at + 1);
    for (std::string_view scheme : {"bearer", "basic", "token"}) {
      if (matches_at(text, at, scheme) && at + scheme.size() < text.size() &&
          is_space(text[at + scheme.size()])) {
        return skip_spaces(text, at + scheme.size());
      }
    }
    return at;
  }
  if (matches_at(text, pos, "bearer") && pos + 6 < text.size() && is_space(text[pos + 6])) {
    return skip_spaces(text, pos + 6);
  }
  return std::string_view::npos;
}

// The length of an hf_ token starting at `pos`, or 0.
std::size_t hf_token_length(std::string_view text, std::size_t pos) {
  if (!matches_at(text, pos, "hf_") || (pos > 0 && is_alnum(text[pos - 1]))) return 0;
  std::size_t end = pos + 3;
  while (end < text.size() && is_alnum(text[end])) ++end;
  return end - pos - 3 >= kMinHfTokenBody ? end - pos : 0;
}

std::string redact_credentials(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (std::size_t length = hf_token_length(text, pos); length > 0) {
      out.append(kRedacted);
      pos += length;
      continue;
    }
    if (std::size_t value = value_after_label(text, pos); value != std::string_view::npos) {
      std::size_t end = value;
      while (end < text.size() && !ends_value(text[end])) ++end;
      if (end > value) {
        out.append(text.substr(pos, value - pos));  // keep the label, drop the value
        out.append(kRedacted);
        pos = end;
        continue;
      }
    }
    out.push_back(text[pos++]);
  }
  return out;
}

void replace_all(std::string& text, std::string_view needle) {
  for (auto pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + kRedacted.size())) {
    text.replace(pos, needle.size(), kRedacted);
  }
}

}  // namespace

void Redactor::add_secret(std::string secret) {
  if (secret.size() < kMinSecretLength) return;
  std::lock_guard lock(mutex_);
  if (std::find(secrets_.begin(), secrets_.end(), secret) == secrets_.end()) {
    secrets_.push_back(std::move(secret));
    // Longest first, so a secret that contains another is removed whole.
    std::sort(secrets_.begin(), secrets_.end(),
              [](const auto& a, const auto& b) { return a.size() > b.size(); });
  }
}

std::string Redactor::redact(std::string_view text) const {
  std::string result(text);
  {
    std::lock_guard lock(mutex_);
    for (const auto& secret : secrets_) replace_all(result, secret);
  }
  return redact_credentials(result);
}

}  // namespace rbee::narration
