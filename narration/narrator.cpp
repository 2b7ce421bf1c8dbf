#include "rbee/narration/narrator.hpp"

namespace rbee::narration {

void Narrator::add_sink(std::shared_ptr<Sink> sink) {
  std::lock_guard lock(mutex_);
  sinks_.push_back(std::move(sink));
}

void Narrator::emit(NarrationEvent event) const {
  if (event.emitted_at_ms == 0) event.emitted_at_ms = now_unix_ms();
  for (std::string* field : {&event.actor, &event.action, &event.target, &event.human}) {
    *field = redactor_.redact(*field);
  }
  if (event.progress) {
    event.progress->file = redactor_.redact(event.progress->file);
    for (auto& file : event.progress->in_flight) file.file = redactor_.redact(file.file);
  }

  std::vector<std::shared_ptr<Sink>> sinks;
  {
    std::lock_guard lock(mutex_);
    sinks = sinks_;
  }
  for (const auto& sink : sinks) sink->consume(event);
}

}  // namespace rbee::narration
