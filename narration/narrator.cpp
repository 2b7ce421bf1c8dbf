#include "rbee/narration/narrator.hpp"

#include <cstdio>

#include "rbee/narration/sanitize.hpp"

namespace rbee::narration {

void Narrator::add_sink(std::shared_ptr<Sink> sink) {
  std::lock_guard lock(mutex_);
  sinks_.push_back(std::move(sink));
}

std::string Narrator::clean(std::string_view text) const {
  return redactor_.redact(sanitize(text));
}

void Narrator::emit(NarrationEvent event) const noexcept {
  try {
    if (event.emitted_at_ms == 0) event.emitted_at_ms = now_unix_ms();
    // Any field may carry outside text (a Hub message, a file name): sanitised, then redacted.
    for (std::string* field :
         {&event.actor, &event.action, &event.target, &event.human, &event.job_id}) {
      *field = clean(*field);
    }
    if (event.progress) {
      event.progress->file = clean(event.progress->file);
      for (auto& file : event.progress->in_flight) file.file = clean(file.file);
    }
    std::vector<std::shared_ptr<Sink>> sinks;
    {
      std::lock_guard lock(mutex_);
      sinks = sinks_;
    }
    for (const auto& sink : sinks) {
      try {
        sink->consume(event);
      } catch (const std::exception& error) {
        std::fprintf(stderr, "rbee-hive: a narration sink failed: %s\n",
                     sanitize(error.what()).c_str());
      }
    }
  } catch (const std::exception& error) {
    // Narration runs inside error paths and catch blocks: it must never add a second failure
    // (an exception here once reached std::terminate). Said on stderr, not swallowed.
    std::fprintf(stderr, "rbee-hive: narration failed: %s\n", sanitize(error.what()).c_str());
  }
}

}  // namespace rbee::narration
