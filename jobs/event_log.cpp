#include "rbee/jobs/event_log.hpp"

#include <algorithm>

namespace rbee::jobs {

std::string error_marker(std::string_view reason) {
  std::string line = "[ERROR] ";
  line.append(reason);
  // An SSE data field ends at a line break: keep the reason on the one terminal line.
  std::replace_if(
      line.begin(), line.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return line;
}

std::uint64_t EventLog::append(std::string data) {
  std::uint64_t seq = 0;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return 0;
    seq = entries_.size() + 1;
    entries_.push_back({seq, std::move(data)});
  }
  appended_.notify_all();
  return seq;
}

bool EventLog::close(std::string terminal) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    entries_.push_back({entries_.size() + 1, std::move(terminal)});
    closed_ = true;
  }
  appended_.notify_all();
  return true;
}

EventLog::Batch EventLog::read_after(std::uint64_t after, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  appended_.wait_for(lock, timeout, [&] { return closed_ || entries_.size() > after; });
  Batch batch;
  if (entries_.size() > after) {
    batch.entries.assign(entries_.begin() + static_cast<std::ptrdiff_t>(after), entries_.end());
  }
  batch.finished = closed_;
  return batch;
}

std::uint64_t EventLog::last_seq() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

bool EventLog::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

}  // namespace rbee::jobs
