#pragma once
// LogSink: one readable line per event on a stream (stderr by default), e.g.
//   2026-11-22T21:30:00.123Z INFO  provisioner download_started job=job-… org/name: Downloading 3
//   files

#include <cstdio>
#include <mutex>
#include <string>

#include "rbee/narration/narrator.hpp"

namespace rbee::narration {

// Thread-safe: lines from concurrent events never interleave.
class LogSink : public Sink {
 public:
  explicit LogSink(Level min_level = Level::info, std::FILE* out = stderr);
  void consume(const NarrationEvent& event) override;

  // The line consume() writes, without the trailing newline.
  static std::string format_line(const NarrationEvent& event);

 private:
  Level min_level_;
  std::FILE* out_;
  std::mutex mutex_;
};

}  // namespace rbee::narration
