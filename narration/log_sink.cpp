#include "rbee/narration/log_sink.hpp"

#include <chrono>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace rbee::narration {
namespace {

std::string format_timestamp(std::int64_t unix_ms) {
  const std::chrono::sys_time<std::chrono::milliseconds> time{std::chrono::milliseconds(unix_ms)};
  const auto seconds = std::chrono::floor<std::chrono::seconds>(time);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", seconds,
                     static_cast<int>((time - seconds).count()));
}

std::string upper_level(Level level) {
  std::string text(to_string(level));
  for (char& c : text) c = static_cast<char>(c - 'a' + 'A');
  return text;
}

}  // namespace

LogSink::LogSink(Level min_level, std::FILE* out) : min_level_(min_level), out_(out) {}

std::string LogSink::format_line(const NarrationEvent& event) {
  return fmt::format("{} {:<5} {} {} job={} {}: {}", format_timestamp(event.emitted_at_ms),
                     upper_level(event.level), event.actor, event.action,
                     event.job_id.empty() ? "-" : event.job_id, event.target, event.human);
}

void LogSink::consume(const NarrationEvent& event) {
  if (event.level < min_level_) return;
  const std::string line = format_line(event) + "\n";
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace rbee::narration
