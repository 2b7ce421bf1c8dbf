#pragma once
// Narrator: the one way components tell operators what they do. Every event is stamped,
// redacted, and handed to every sink (the stderr log, the per-job event logs, ...).

#include <memory>
#include <mutex>
#include <vector>

#include "rbee/narration/event.hpp"
#include "rbee/narration/redactor.hpp"

namespace rbee::narration {

// Receives events after redaction. consume() may be called from any thread at once and must
// not block for long (it runs on the thread of the component that narrates).
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void consume(const NarrationEvent& event) = 0;
};

// Thread-safe. Sinks are added at start-up and live as long as the narrator.
class Narrator {
 public:
  void add_sink(std::shared_ptr<Sink> sink);
  Redactor& redactor() { return redactor_; }
  std::string redact(std::string_view text) const { return redactor_.redact(text); }
  // sanitize() then redact(): what any outside text needs before it is shown or stored.
  std::string clean(std::string_view text) const;

  // Stamps emitted_at_ms when it is 0, sanitises and redacts every text field, then fans out.
  // Never throws: a failing sink is reported on stderr and the others still get the event.
  void emit(NarrationEvent event) const noexcept;

 private:
  Redactor redactor_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Sink>> sinks_;
};

}  // namespace rbee::narration
