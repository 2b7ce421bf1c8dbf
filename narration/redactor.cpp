#include "rbee/narration/redactor.hpp"

#include <algorithm>
#include <cctype>
#include <regex>

namespace rbee::narration {
namespace {

// Secrets shorter than this would turn ordinary words into [REDACTED].
constexpr std::size_t kMinSecretLength = 4;

const std::regex& credential_pattern() {
  // Group 1 keeps the label ("Authorization: ", "Bearer "); the value after it goes.
  // hf_ tokens are matched anywhere, since they may appear in URLs or error bodies.
  static const std::regex pattern(
      R"(((?:authorization\s*[:=]\s*(?:bearer\s+|basic\s+|token\s+)?)|(?:bearer\s+))[^\s"',;]+|\bhf_[A-Za-z0-9]{8,})",
      std::regex::icase | std::regex::optimize);
  return pattern;
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
  std::string out;
  out.reserve(result.size());
  auto begin = std::sregex_iterator(result.begin(), result.end(), credential_pattern());
  std::size_t copied = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const std::smatch& match = *it;
    out.append(result, copied, static_cast<std::size_t>(match.position(0)) - copied);
    out.append(match[1].matched ? match[1].str() : std::string());
    out.append(kRedacted);
    copied = static_cast<std::size_t>(match.position(0) + match.length(0));
  }
  out.append(result, copied, std::string::npos);
  return out;
}

}  // namespace rbee::narration
