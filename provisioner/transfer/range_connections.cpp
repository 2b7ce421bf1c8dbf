// One connection of a ranged download: it claims the next bytes of the file nobody has claimed,
// about a second's worth at its speed, fetches them with one Range request into the part, and
// retries, hands them back or leaves on failures.
//
// Claiming in file order keeps the written prefix growing, so the hash and the writeback run
// while the bytes arrive instead of after the last one. Requests are bounded, so no connection
// is ever cut short: a surplus one leaves when its request is done and the server never sends
// a byte that is dropped (DESIGN §8, no byte fetched twice). A claim is never more than an equal
// share of what is left for the most connections the file may get, so a connection the
// controller adds finds work and the last requests end together.
#include <algorithm>

#include <fmt/format.h>

#include "part_file.hpp"
#include "ranged_file_download.hpp"
#include "rbee/provisioner/content_range.hpp"
#include "rbee/provisioner/retry.hpp"

namespace rbee::provisioner::ranged {
namespace {

// Per connection: libcurl's receive buffer and the write batch. Many connections run at once,
// so each reads and writes less than a lone one does (HttpRequest::receive_buffer): 32 of them
// hold 16 MiB.
constexpr std::size_t kWriteBatch = 256 << 10;
constexpr long kReceiveBuffer = 256 << 10;
constexpr std::size_t kDirectWrite = 64 << 10;  // a read this large skips the batch
// A request asks for about this long of its connection's last speed, within these bounds. The
// first request of a connection is small: its speed is not known yet.
constexpr double kRequestSeconds = 1.0;
constexpr std::uint64_t kFirstRequestBytes = 2 << 20;
constexpr std::uint64_t kMinRequestBytes = 1 << 20;
constexpr std::uint64_t kMaxRequestBytes = 64 << 20;

std::uint64_t next_request_bytes(std::uint64_t bytes, Clock::duration took) {
  const double seconds = std::max(1e-3, std::chrono::duration<double>(took).count());
  const double wanted = static_cast<double>(bytes) / seconds * kRequestSeconds;
  return std::clamp(static_cast<std::uint64_t>(wanted), kMinRequestBytes, kMaxRequestBytes);
}

}  // namespace

// An unfinished segment nobody fetches, with the download still on.
bool RangedDownload::has_unclaimed_work() {
  std::lock_guard lock(mutex_);
  if (group_stop_.stop_requested()) return false;
  return std::any_of(segments_.begin(), segments_.end(),
                     [](const Segment& s) { return !s.taken && !s.complete(); });
}

void RangedDownload::work(Worker& worker) {
  std::stop_callback relay_group_stop(group_stop_.get_token(),
                                      [&worker] { worker.stop.request_stop(); });
  try {
    while (!worker.retire && !worker.leave) {
      const auto index = claim_segment(worker);
      if (!index) break;
      fetch_segment(*index, worker);
    }
  } catch (...) {
    fail(std::current_exception());
  }
  worker.http.reset();  // the connection closes before the coordinator counts this one out
  std::lock_guard lock(mutex_);
  worker.finished = true;
  ++workers_done_;
  cv_.notify_all();
}

// The lowest unclaimed bytes of the file, cut to one request of this connection's size, and never
// more than an equal share of what is left for the most connections the file may get: a
// connection the controller adds finds work, and near the end they all finish together.
std::optional<std::size_t> RangedDownload::claim_segment(const Worker& worker) {
  std::lock_guard lock(mutex_);
  if (group_stop_.stop_requested()) return std::nullopt;
  std::optional<std::size_t> lowest;
  std::uint64_t unclaimed = 0;
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    const Segment& s = segments_[i];
    if (s.taken || s.complete()) continue;
    unclaimed += s.end - s.written;
    if (!lowest || s.written < segments_[*lowest].written) lowest = i;
  }
  if (!lowest) return std::nullopt;
  const std::uint64_t min_request = std::min(kMinRequestBytes, policy_.min_range_bytes);
  const auto sharing = static_cast<std::uint64_t>(std::max(1, share_between_.load()));
  const std::uint64_t size = std::max(
      min_request, std::min(worker.request_bytes > 0 ? worker.request_bytes : kFirstRequestBytes,
                            unclaimed / sharing));
  Segment& claimed = segments_[*lowest];
  claimed.taken = true;
  const std::uint64_t cut = claimed.written + size;
  if (cut + min_request <= claimed.end) {  // the rest stays for the next claim
    const std::uint64_t end = std::exchange(claimed.end, cut);
    segments_.push_back({cut, end, cut, false});
  }
  return *lowest;
}

void RangedDownload::fetch_segment(std::size_t index, Worker& worker) {
  int failures = 0;
  for (;;) {
    std::uint64_t from = 0, to = 0;
    {
      std::lock_guard lock(mutex_);
      Segment& segment = segments_[index];
      if (segment.complete() || group_stop_.stop_requested() || worker.retire) {
        segment.taken = false;
        return;
      }
      from = segment.written;
      to = segment.end;
    }
    int generation = 0;
    try {
      const ResolvedFile source = current_source(generation);
      const auto started = Clock::now();
      transfer(index, source, worker, from, to);
      worker.request_bytes = next_request_bytes(to - from, Clock::now() - started);
    } catch (const HubError& error) {
      if (group_stop_.stop_requested()) continue;  // the loop top releases the segment
      std::uint64_t now_written;
      {
        std::lock_guard lock(mutex_);
        now_written = segments_[index].written;
      }
      if (now_written > from) failures = 0;  // bytes flowed: a new run of failures
      if (const int others = refused_while_others_run(error); others > 0) {
        notify_retry(0,
                     fmt::format("{}; its range goes to the other {} connection{}", error.what(),
                                 others, others == 1 ? "" : "s"),
                     {});
        worker.retire = true;  // the loop top releases the segment to the others
        continue;
      }
      if (error.kind() == HubErrorKind::forbidden && source_is_cdn(generation)) {
        refresh_source(generation, error);  // the signed URL expired, for every connection
        continue;
      }
      const auto delay = retry_delay_or_throw(policy_, file_.path, error, failures);
      notify_retry(failures, error.what(), delay);
      sleep_unless_stopped(delay, group_stop_.get_token());
    }
  }
}

// A 429 or 503 while other connections are served: the server's limit, not a passing fault.
// Returns how many others there are (recorded for the controller), or 0 for an ordinary retry.
int RangedDownload::refused_while_others_run(const HubError& error) {
  if (error.kind() != HubErrorKind::rate_limited && error.status() != 503) return 0;
  std::lock_guard lock(mutex_);
  // Those the server was sending a body to lately (since the coordinator's last tick: one
  // between two requests still counts; one refused too does not).
  const int others = peak_served_;
  if (others <= 0) return 0;  // the last connection retries, with backoff, as always
  refused_with_others_ =
      refused_with_others_ == 0 ? others : std::min(refused_with_others_, others);
  return others;
}

// One GET of bytes [from, to) of segment `index`. Returns when they are all written (or the
// worker was retired or the group stopped); throws HubError otherwise.
void RangedDownload::transfer(std::size_t index, const ResolvedFile& source, Worker& worker,
                              std::uint64_t from, std::uint64_t to) {
  if (!worker.http) worker.http = std::make_unique<HttpConnection>(hub_.settings());
  if (group_stop_.stop_requested()) return;
  HttpRequest request;
  request.url = source.url;
  request.headers = hub_.headers_for(source.send_token);
  request.headers.emplace("Range", fmt::format("bytes={}-{}", from, to - 1));
  request.stall_timeout = policy_.stall_timeout;
  request.stall_min_bytes = policy_.stall_min_bytes;
  request.receive_buffer = kReceiveBuffer;

  std::vector<char>& batch = worker.batch;
  batch.clear();
  batch.reserve(kWriteBatch);
  std::uint64_t batch_offset = from;
  Writeback writeback(from);
  auto write = [&](const char* data, std::size_t length) {
    write_at(fd_.get(), part_path_, data, length, batch_offset);
    batch_offset += length;
    writeback.advance(fd_.get(), batch_offset);
    std::lock_guard lock(mutex_);
    segments_[index].written = batch_offset;
  };
  auto flush = [&] {
    write(batch.data(), batch.size());
    batch.clear();
  };
  bool wrong_range = false, reached_end = false, served = false;
  request.on_head = [&](const HttpResponseHead& head) {
    if (head.status == 200) {  // the server ignores Range: ranges are of no use here
      std::lock_guard lock(mutex_);
      ranges_refused_ = true;
      group_stop_.request_stop();
      return false;
    }
    if (head.status != 206) return false;
    wrong_range = !content_range_matches(head.header("Content-Range"), from, to - 1, file_.size);
    if (wrong_range) return false;
    std::lock_guard lock(mutex_);
    peak_served_ = std::max(peak_served_, ++being_served_);
    served = true;
    return true;
  };
  request.on_body = [&](const char* data, std::size_t length) {
    if (worker.retire) return false;
    worker.received += length;
    const std::uint64_t accepted =
        std::min<std::uint64_t>(length, to - (batch_offset + batch.size()));
    if (batch.empty() && accepted >= kDirectWrite) {
      write(data, accepted);  // a large read goes to the part as it is, without a copy
    } else {
      batch.insert(batch.end(), data, data + accepted);
      if (batch.size() >= kWriteBatch) flush();
    }
    if (batch_offset + batch.size() >= to) reached_end = true;
    return accepted == length;  // more than was asked for: the server is wrong, stop it
  };
  const HttpResult result = [&] {
    struct Unserved {  // however perform() ends, a thrown disk error too
      RangedDownload& download;
      bool& served;
      ~Unserved() {
        if (!served) return;
        std::lock_guard lock(download.mutex_);
        --download.being_served_;
      }
    } unserved{*this, served};
    return worker.http->perform(request, worker.stop.get_token());
  }();
  if (!batch.empty()) flush();
  writeback.finish(fd_.get(), batch_offset);
  written_back_ += writeback.started();
  if (reached_end || group_stop_.stop_requested() || worker.retire) return;
  const std::string what = fmt::format("{} (bytes {}-{})", file_.path, from, to - 1);
  const int status = result.head.status;
  if (wrong_range) {
    throw HubError(HubErrorKind::protocol,
                   fmt::format("{}: the server answered another range or file size", what));
  }
  if (status != 0 && status != 206) {
    throw hub_error_for(status, result.head.header("X-Error-Code"), what,
                        result.head.header("Retry-After"),
                        source.send_token && !hub_.settings().token.empty());
  }
  if (result.outcome == HttpOutcome::stalled) {
    throw HubError(
        HubErrorKind::network,
        fmt::format("{}: stalled (under {} bytes in {} ms) at byte {}", what,
                    policy_.stall_min_bytes, policy_.stall_timeout.count(), batch_offset));
  }
  throw HubError(
      HubErrorKind::network,
      fmt::format("{}: connection lost at byte {} ({})", what, batch_offset,
                  result.outcome == HttpOutcome::complete ? "the body ended early" : result.error));
}

// The file's URL, resolved once for all connections; `generation` says which resolution.
ResolvedFile RangedDownload::current_source(int& generation) {
  std::lock_guard lock(source_mutex_);
  if (!source_) {
    source_ = hub_.resolve(repo_, commit_, file_.path, nullptr, group_stop_.get_token());
    ++source_generation_;
  }
  generation = source_generation_;
  return *source_;
}

bool RangedDownload::source_is_cdn(int generation) {
  std::lock_guard lock(source_mutex_);
  return generation == source_generation_ && source_ && !source_->send_token;
}

void RangedDownload::refresh_source(int generation, const HubError& error) {
  std::lock_guard lock(source_mutex_);
  if (generation != source_generation_) return;  // another connection already did
  if (++url_refreshes_ > 3) throw error;
  source_.reset();
  notify_retry(0, std::string(error.what()) + "; refreshing the URL", {});
}

}  // namespace rbee::provisioner::ranged
