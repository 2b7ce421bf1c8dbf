#include "rbee/cli/progress_view.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <fmt/format.h>
#include <rbee/narration/human_units.hpp>
#include <rbee/narration/sanitize.hpp>

namespace rbee::cli {
namespace {

using narration::format_bytes;

constexpr std::size_t kMaxFileBars = 8;  // more files in flight are summed up in one line
constexpr int kBarWidth = 24;
constexpr std::string_view kUp = "\x1b[{}A";          // cursor up n lines
constexpr std::string_view kClearBelow = "\r\x1b[J";  // column 0, erase to the end of screen

std::string bar(std::uint64_t done, std::uint64_t total) {
  const double fraction = total == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / total);
  const int filled = static_cast<int>(fraction * kBarWidth);
  std::string text(static_cast<std::size_t>(filled), '=');
  if (filled < kBarWidth) text += '>';
  text.resize(kBarWidth, ' ');
  return "[" + text + "]";
}

std::string percent(std::uint64_t done, std::uint64_t total) {
  return fmt::format("{:>3.0f}%", total == 0 ? 100.0 : 100.0 * done / total);
}

std::string speed(double bytes_per_sec) {
  return bytes_per_sec > 0 ? format_bytes(static_cast<std::uint64_t>(bytes_per_sec)) + "/s" : "";
}

}  // namespace

std::string clock_time(std::int64_t unix_ms) {
  const std::time_t seconds = unix_ms / 1000;
  std::tm local{};
  localtime_r(&seconds, &local);
  return fmt::format("{:02}:{:02}:{:02}", local.tm_hour, local.tm_min, local.tm_sec);
}

std::string short_duration(double seconds) {
  const auto total = static_cast<std::uint64_t>(std::max(0.0, seconds) + 0.5);
  if (total < 60) return fmt::format("{} s", total);
  if (total < 3600) return fmt::format("{} m {:02} s", total / 60, total % 60);
  return fmt::format("{} h {:02} m", total / 3600, total % 3600 / 60);
}

ProgressView::ProgressView(std::ostream& out, int terminal_width)
    : out_(out), width_(std::max(0, terminal_width)) {}

std::string ProgressView::fit(std::string line) const {
  if (width_ > 1 && line.size() >= static_cast<std::size_t>(width_))
    line.resize(static_cast<std::size_t>(width_ - 1));
  return line;
}

// Narration is wrapped at spaces, never cut: the end of a line ("… in 30000 ms)") is often
// what matters. Continuation lines are indented past the time column.
std::string ProgressView::wrap(const std::string& line) const {
  if (width_ <= 1 || line.size() < static_cast<std::size_t>(width_)) return line;
  constexpr std::size_t kIndent = 9;  // "12:04:05 "
  const std::size_t width = static_cast<std::size_t>(width_ - 1);
  std::string out;
  std::string_view rest = line;
  bool first = true;
  while (!rest.empty()) {
    const std::size_t room = first ? width : std::max<std::size_t>(width - kIndent, 16);
    std::string_view piece = rest.substr(0, room);
    if (rest.size() > room) {
      const auto space = piece.rfind(' ');
      if (space != std::string_view::npos && space > room / 2) piece = piece.substr(0, space);
    }
    if (!first) out += '\n' + std::string(kIndent, ' ');
    out += piece;
    rest.remove_prefix(piece.size());
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    first = false;
  }
  return out;
}

std::string describe_data_event(const nlohmann::json& event) {
  const std::string action = event.value("action", "");
  const nlohmann::json payload = event.value("payload", nlohmann::json::object());
  const auto text = [&](const char* key) {
    return payload.contains(key) && payload[key].is_string() ? payload[key].get<std::string>()
                                                             : std::string();
  };
  if (action == "model_download" && !text("model").empty()) {
    return payload.value("fallback", false)
               ? fmt::format("Installed {} (fallback for {})", text("model"), text("requested"))
               : fmt::format("Installed {}", text("model"));
  }
  if (action == "model_delete" && !text("id").empty()) return "Deleted " + text("id");
  if (action == "model_list" && payload.contains("models") && payload["models"].is_array()) {
    const auto count = payload["models"].size();
    return fmt::format("{} model{} in the catalog", count, count == 1 ? "" : "s");
  }
  if (action == "model_get" && payload.contains("model") && payload["model"].is_object()) {
    const auto& model = payload["model"];
    return fmt::format("{} is {}", model.value("id", "?"), model.value("status", "?"));
  }
  return narration::dump_json(payload);  // an answer this client does not know: as it came
}

std::string terminal_safe(std::string_view text) {
  std::string out;
  for (std::size_t start = 0; start <= text.size();) {
    const auto end = std::min(text.find('\n', start), text.size());
    if (start > 0) out += '\n';
    out += narration::sanitize(text.substr(start, end - start), 64 * 1024);
    start = end + 1;
  }
  return out;
}

std::string terminal_json(const nlohmann::json& value) {
  return value.dump(2, ' ', true, nlohmann::json::error_handler_t::replace);
}

void ProgressView::print_line_locked(const std::string& line) {
  const std::string text = terminal_safe(line);
  if (!live()) {
    out_ << text << '\n';
    return;
  }
  // Above the bars: erase them, print the line where they were, draw them again below.
  if (drawn_lines_ > 0) out_ << fmt::format(fmt::runtime(kUp), drawn_lines_);
  out_ << kClearBelow << text << '\n';
  drawn_lines_ = 0;
}

void ProgressView::update_files_locked(const nlohmann::json& files, Clock::time_point now) {
  std::map<std::string, FileBar> next;
  for (const auto& file : files) {
    const std::string path = terminal_safe(file.value("file", ""));
    FileBar bar{file.value("bytes_done", std::uint64_t{0}),
                file.value("bytes_total", std::uint64_t{0}), 0, now};
    if (const auto before = files_.find(path); before != files_.end()) {
      const double seconds = std::chrono::duration<double>(now - before->second.updated).count();
      const double instant =
          seconds > 0
              ? static_cast<double>(bar.done - std::min(bar.done, before->second.done)) / seconds
              : before->second.bytes_per_sec;
      bar.bytes_per_sec = before->second.bytes_per_sec == 0
                              ? instant
                              : 0.6 * before->second.bytes_per_sec + 0.4 * instant;
    }
    next.emplace(path, bar);
  }
  files_ = std::move(next);
}

void ProgressView::on_event(const nlohmann::json& event, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (closed_ || !event.is_object()) return;
  const std::string action = event.value("action", "");
  const std::string human = event.value("human", "");
  const std::string level = event.value("level", "info");

  if (event.contains("model_bytes_total")) {
    has_total_ = true;
    total_done_ = event.value("model_bytes_done", std::uint64_t{0});
    total_bytes_ = event.value("model_bytes_total", std::uint64_t{0});
    bytes_per_sec_ = event.value("bytes_per_sec", 0.0);
    eta_s_ = event.contains("eta_s") && event["eta_s"].is_number()
                 ? std::optional(event["eta_s"].get<double>())
                 : std::nullopt;
    if (event.contains("files")) update_files_locked(event["files"], now);
  }

  const bool progress = action == "download_progress";
  if (progress && live()) return repaint_locked(now);  // the bars say it
  if (event.value("type", "") == "data") {
    print_line_locked(wrap(describe_data_event(event)));
    if (live()) repaint_locked(now);
    return;
  }
  const std::string tag = level == "info" ? "" : fmt::format("{}: ", level);
  const std::string time = clock_time(event.value("emitted_at_ms", std::int64_t{0}));
  print_line_locked(wrap(fmt::format("{} {}{}", time, tag, human)));
  if (live()) repaint_locked(now);
}

void ProgressView::note(const std::string& line) {
  std::lock_guard lock(mutex_);
  if (closed_) return;
  print_line_locked(wrap(line));
  if (live()) repaint_locked(Clock::now());
}

std::vector<std::string> ProgressView::bar_lines_locked(Clock::time_point now) const {
  std::vector<std::string> lines;
  const int name_width = std::clamp(width_ - 82, 10, 48);  // the rest takes ~80 columns
  auto name_column = [&](const std::string& name) {
    if (static_cast<int>(name.size()) <= name_width) return fmt::format("{:<{}}", name, name_width);
    return "..." + name.substr(name.size() - static_cast<std::size_t>(name_width - 3));
  };
  std::size_t shown = 0;
  for (const auto& [path, file] : files_) {
    if (++shown > kMaxFileBars) {
      lines.push_back(fmt::format("... and {} more files in flight", files_.size() - kMaxFileBars));
      break;
    }
    lines.push_back(fit(fmt::format("{} {} {} {:>10} / {:<10} {}", name_column(path),
                                    bar(file.done, file.total), percent(file.done, file.total),
                                    format_bytes(file.done), format_bytes(file.total),
                                    outcome_.empty() ? speed(file.bytes_per_sec) : outcome_)));
  }
  const double elapsed = std::chrono::duration<double>(now - started_).count();
  if (!has_total_) {
    lines.push_back(
        fit(fmt::format("Waiting for the first progress report... ({})", short_duration(elapsed))));
    return lines;
  }
  const bool eta = outcome_.empty() && eta_s_ && total_done_ < total_bytes_;
  lines.push_back(fit(fmt::format(
      "{} {} {} {:>10} / {:<10} {}{}", name_column("Total"), bar(total_done_, total_bytes_),
      percent(total_done_, total_bytes_), format_bytes(total_done_), format_bytes(total_bytes_),
      outcome_.empty() ? speed(bytes_per_sec_) : outcome_,
      eta ? "  ETA " + short_duration(*eta_s_) : "")));
  return lines;
}

void ProgressView::repaint_locked(Clock::time_point now) {
  if (!live() || closed_) return;
  std::string frame;
  if (drawn_lines_ > 0) frame += fmt::format(fmt::runtime(kUp), drawn_lines_);
  frame += kClearBelow;
  const auto lines = bar_lines_locked(now);
  for (const auto& line : lines) frame += line + "\n";
  out_ << frame << std::flush;
  drawn_lines_ = static_cast<int>(lines.size());
}

void ProgressView::repaint(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  repaint_locked(now);
}

void ProgressView::close(std::string_view outcome) {
  std::lock_guard lock(mutex_);
  if (closed_) return;
  outcome_ = outcome;
  if (live() && drawn_lines_ > 0) {
    out_ << fmt::format(fmt::runtime(kUp), drawn_lines_) << kClearBelow;
    // Leave the final state of the bars on screen, as a record of what was downloaded.
    for (const auto& line : bar_lines_locked(Clock::now())) out_ << line << '\n';
  }
  drawn_lines_ = 0;
  closed_ = true;
  out_ << std::flush;
}

}  // namespace rbee::cli
