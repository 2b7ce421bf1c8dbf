#pragma once
// Redactor: removes secrets from text before it reaches any log, stream or file.

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace rbee::narration {

inline constexpr std::string_view kRedacted = "[REDACTED]";

// Replaces by [REDACTED]: every configured secret, the value after "Authorization:" or
// "Bearer ", and anything shaped like a Hugging Face token (hf_ followed by 8+ characters).
// Thread-safe; add_secret may be called while other threads redact.
class Redactor {
 public:
  void add_secret(std::string secret);  // empty or very short secrets are ignored
  std::string redact(std::string_view text) const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> secrets_;
};

}  // namespace rbee::narration
