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

EventLog::EventLog(std::size_t max_entries) : max_entries_(std::max<std::size_t>(max_entries, 2)) {}

std::uint64_t EventLog::append(std::string data, Retention retention) {
  std::uint64_t seq = 0;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return 0;
    if (retention == Retention::superseded) drop_superseded_locked();
    seq = ++last_seq_;
    entries_.push_back({seq, std::move(data)});
    if (retention == Retention::superseded) superseded_seq_ = seq;
    while (entries_.size() > max_entries_) {
      if (entries_.front().seq == superseded_seq_) superseded_seq_ = 0;
      entries_.pop_front();
    }
  }
  appended_.notify_all();
  return seq;
}

void EventLog::drop_superseded_locked() {
  if (superseded_seq_ == 0) return;
  const auto found =
      std::lower_bound(entries_.begin(), entries_.end(), superseded_seq_,
                       [](const LogEntry& entry, std::uint64_t seq) { return entry.seq < seq; });
  if (found != entries_.end() && found->seq == superseded_seq_) entries_.erase(found);
  superseded_seq_ = 0;
}

bool EventLog::close(std::string terminal) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    // The terminal line is never dropped: the cap may be exceeded by this one entry.
    entries_.push_back({++last_seq_, std::move(terminal)});
    closed_ = true;
  }
  appended_.notify_all();
  return true;
}

EventLog::Batch EventLog::read_after(std::uint64_t after, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  appended_.wait_for(lock, timeout, [&] { return closed_ || last_seq_ > after; });
  Batch batch;
  const auto first =
      std::upper_bound(entries_.begin(), entries_.end(), after,
                       [](std::uint64_t seq, const LogEntry& entry) { return seq < entry.seq; });
  batch.entries.assign(first, entries_.end());
  batch.finished = closed_;
  return batch;
}

std::uint64_t EventLog::last_seq() const {
  std::lock_guard lock(mutex_);
  return last_seq_;
}

bool EventLog::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

bool EventLog::is_terminal(std::uint64_t seq) const {
  std::lock_guard lock(mutex_);
  return closed_ && seq == last_seq_;
}

std::size_t EventLog::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace rbee::jobs
