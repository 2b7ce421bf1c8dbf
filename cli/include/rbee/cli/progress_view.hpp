#pragma once
// ProgressView: how `rbee-hive pull` and `watch` show a job's event stream. On a terminal,
// narration lines scroll above one live bar per file in flight and a total bar, repainted in
// place; anywhere else, one plain timestamped line per event and no escape codes.

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace rbee::cli {

// What the terminal client prints of anything the hive sent: each line sanitised (no ESC, C0 or
// C1 controls, valid UTF-8), so a hostile hive or Hub cannot drive the operator's terminal.
std::string terminal_safe(std::string_view text);
// JSON for a person's terminal: indented, every non-ASCII character escaped, never throws.
std::string terminal_json(const nlohmann::json& value);
// What a data event means, in a sentence ("Installed org/m (fallback for org/x)"); an answer
// this client does not know is its JSON on one line.
std::string describe_data_event(const nlohmann::json& event);

class ProgressView {
 public:
  using Clock = std::chrono::steady_clock;

  // `terminal_width` 0: plain lines. Otherwise lines are cut to that many columns, so a
  // repaint never wraps.
  ProgressView(std::ostream& out, int terminal_width);

  // Thread-safe: a stream reader feeds events while a timer calls repaint().
  void on_event(const nlohmann::json& event, Clock::time_point now = Clock::now());
  void note(const std::string& line);  // a line of the client's own (reconnecting, cancelling)
  void repaint(Clock::time_point now = Clock::now());
  // Ends the view (before the final line is printed), leaving the bars' last state on screen;
  // a non-empty `outcome` ("cancelled", "failed") stands where speed and ETA were.
  void close(std::string_view outcome = {});

  bool live() const { return width_ > 0; }

 private:
  struct FileBar {
    std::uint64_t done = 0, total = 0;
    double bytes_per_sec = 0;
    Clock::time_point updated;
  };

  void print_line_locked(const std::string& text);
  void update_files_locked(const nlohmann::json& files, Clock::time_point now);
  std::vector<std::string> bar_lines_locked(Clock::time_point now) const;
  void repaint_locked(Clock::time_point now);
  std::string fit(std::string line) const;
  std::string wrap(const std::string& line) const;

  std::ostream& out_;
  const int width_;
  mutable std::mutex mutex_;
  std::map<std::string, FileBar> files_;  // in flight, by repo path
  std::uint64_t total_done_ = 0, total_bytes_ = 0;
  double bytes_per_sec_ = 0;
  std::optional<double> eta_s_;
  bool has_total_ = false;
  int drawn_lines_ = 0;  // bar lines on screen below the scrolled text
  bool closed_ = false;
  std::string outcome_;  // set by close()
  Clock::time_point started_ = Clock::now();
};

// "12:04:05" in local time, for plain lines.
std::string clock_time(std::int64_t unix_ms);
// "1 m 05 s", "12 s": for ETAs.
std::string short_duration(double seconds);

}  // namespace rbee::cli
