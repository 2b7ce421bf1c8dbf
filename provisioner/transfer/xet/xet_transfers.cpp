// Step 4 of a Xet download (xet_download.hpp): the terms nobody has on disk, fetched over
// parallel connections, one presigned GET per job (several ranges of a xorb in one Range
// header, multipart answers), each chunk decoded and written at its terms' offsets while the
// coordinator steers the connection count.
#include <algorithm>

#include <fmt/format.h>

#include "part_file.hpp"
#include "rbee/provisioner/content_range.hpp"
#include "rbee/provisioner/retry.hpp"
#include "xet/xet_file_download.hpp"

namespace rbee::provisioner::xet {
namespace {

using namespace std::chrono_literals;

constexpr auto kTick = 100ms;         // hashing and progress cadence
constexpr auto kPersistEvery = 1s;    // fdatasync + sidecar cadence
constexpr int kStartConnections = 4;  // the adaptive controller's first step, as for ranges

}  // namespace

void XetDownload::fetch_missing_terms() {
  plan_jobs();
  {
    std::lock_guard lock(mutex_);
    if (jobs_.empty() && copiers_running_ == 0) return;
  }
  expired_ = false;
  failure_ = nullptr;
  group_stop_ = std::stop_source();
  roster_.reset();
  // As many connections as pay off (adaptive_connections.hpp): on a fast link a few beat
  // 32, which only contend for the same cores; under a per-connection cap more help.
  const int ceiling = static_cast<int>(
      std::min<std::size_t>(std::max<std::size_t>(jobs_.size(), 1),
                            static_cast<std::size_t>(std::max(1, policy_.connections))));
  controller_.emplace(
      ceiling, policy_.adaptive_connections ? std::min(kStartConnections, ceiling) : ceiling);
  {
    std::lock_guard lock(mutex_);
    target_workers_ = static_cast<std::size_t>(controller_->target());
  }
  try {
    add_workers();
    coordinate();
  } catch (...) {  // a disk error while hashing or persisting: the workers stop first
    group_stop_.request_stop();
    workers_.clear();
    throw;
  }
  workers_.clear();  // joined
  if (failure_) std::rethrow_exception(failure_);
  if (stop_.stop_requested()) throw DownloadCancelled();
  if (expired_) throw UrlsExpired{};
}

// Up to the controller's target, while jobs wait: the caller holds one connection for this
// file, the others come from the budget.
void XetDownload::add_workers() {
  std::lock_guard lock(mutex_);
  const bool waiting = std::any_of(jobs_.begin(), jobs_.end(),
                                   [](const Job& job) { return !job.done && !job.taken; });
  while (waiting && !group_stop_.stop_requested() && roster_.running() < target_workers_) {
    const bool paid = !workers_.empty() && extra_connections_;
    if (paid && !extra_connections_->try_acquire()) return;
    roster_.joined();
    workers_.emplace_back([this, paid] {
      work();
      if (paid) extra_connections_->release();
      changed_.notify_all();
    });
  }
}

void XetDownload::plan_jobs() {
  jobs_.clear();
  std::map<std::size_t, std::size_t> job_of_fetch;
  for (std::size_t t = 0; t < reconstruction_.terms.size(); ++t) {
    if (is_done_or_copying(t)) continue;
    const Term& term = reconstruction_.terms[t];
    for (std::size_t f = 0; f < reconstruction_.fetches.size(); ++f) {
      const XorbFetch& fetch = reconstruction_.fetches[f];
      if (fetch.xorb != term.xorb) continue;
      const auto range = std::find_if(fetch.ranges.begin(), fetch.ranges.end(), [&](const auto& r) {
        return r.chunks.contains(term.chunks);
      });
      if (range == fetch.ranges.end()) continue;
      auto [it, added] = job_of_fetch.emplace(f, jobs_.size());
      if (added) jobs_.push_back(Job{f, {}, {}});
      Job& job = jobs_[it->second];
      const std::size_t r = static_cast<std::size_t>(range - fetch.ranges.begin());
      const auto slot = std::find(job.ranges.begin(), job.ranges.end(), r);
      if (slot == job.ranges.end()) {
        job.ranges.push_back(r);
        job.terms.push_back({t});
      } else {
        job.terms[static_cast<std::size_t>(slot - job.ranges.begin())].push_back(t);
      }
      break;
    }
  }
  for (Job& job : jobs_) {  // a Range header lists its ranges in order
    std::vector<std::size_t> order(job.ranges.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](auto a, auto b) { return job.ranges[a] < job.ranges[b]; });
    Job sorted{job.fetch, {}, {}};
    for (auto i : order) {
      sorted.ranges.push_back(job.ranges[i]);
      sorted.terms.push_back(job.terms[i]);
    }
    job = std::move(sorted);
  }
}

// Until every worker and the copier are done: steer the connection count, hash the growing
// prefix, report progress, persist.
void XetDownload::coordinate() {
  auto last_persist = Clock::now();
  std::unique_lock lock(mutex_);
  while (roster_.running() > 0 || copiers_running_ > 0) {
    changed_.wait_for(lock, kTick);
    if (stop_.stop_requested()) group_stop_.request_stop();
    const int open = static_cast<int>(roster_.running());
    lock.unlock();
    const bool was_settled = controller_->settled();
    controller_->sample(Clock::now(), received_.load(), open);
    if (controller_->settled() && !was_settled && events_.connections_settled) {
      events_.connections_settled(controller_->target(), controller_->reason());
    }
    {
      std::lock_guard target_lock(mutex_);
      target_workers_ = static_cast<std::size_t>(controller_->target());
    }
    add_workers();
    hash_prefix();
    report_progress();
    if (Clock::now() - last_persist >= kPersistEvery) {
      persist();
      last_persist = Clock::now();
    }
    lock.lock();
  }
  lock.unlock();
  persist();
}

// A worker is counted in roster_ until it leaves. A surplus worker (the target fell) is
// counted out by claim_job() in the same step under mutex_ that decided it (WorkerRoster), so
// exactly the surplus leaves, never every worker at once; any other departure (no work left,
// stopped, failed) is counted when work() returns.
void XetDownload::work() {
  struct Departure {
    XetDownload& download;
    bool counted = true;  // false once claim_job() counted this worker out
    ~Departure() {
      if (!counted) return;
      std::lock_guard lock(download.mutex_);
      download.roster_.left();
    }
  } departure{*this};
  HttpConnection connection(hub_.settings());
  try {
    while (auto index = claim_job(departure.counted)) {
      Job& job = jobs_[*index];
      const std::uint64_t before = done_bytes();
      try {
        if (!transfer(connection, job)) return;  // the group was stopped
        std::lock_guard lock(mutex_);
        job.done = true;
        job.taken = false;
        changed_.notify_all();
      } catch (const HubError& error) {
        if (group_stop_.stop_requested()) return;
        if (error.status() == 403) {  // the presigned URL expired
          std::lock_guard lock(mutex_);
          expired_ = true;
          group_stop_.request_stop();
          return;
        }
        if (done_bytes() > before) job.failures = 0;
        const auto delay = retry_delay_or_throw(policy_, file_.path, error, job.failures);
        notify_retry(job.failures, error.what(), delay);
        if (!sleep_unless_stopped(delay, group_stop_.get_token())) return;
        std::lock_guard lock(mutex_);
        job.taken = false;
      }
    }
  } catch (...) {
    std::lock_guard lock(mutex_);
    if (!failure_) failure_ = std::current_exception();
    group_stop_.request_stop();
  }
}

// The next job for a worker, or nullopt: the worker leaves. A surplus worker is counted out
// here (`counted` cleared), under the lock that decided it.
std::optional<std::size_t> XetDownload::claim_job(bool& counted) {
  std::lock_guard lock(mutex_);
  if (group_stop_.stop_requested()) return std::nullopt;
  // Above the target (a step that did not pay is undone): this connection leaves.
  if (roster_.leave_if_surplus(target_workers_)) {
    counted = false;
    return std::nullopt;
  }
  for (std::size_t i = 0; i < jobs_.size(); ++i) {
    if (!jobs_[i].done && !jobs_[i].taken) {
      jobs_[i].taken = true;
      return i;
    }
  }
  return std::nullopt;
}

// True when every term of the job is on disk; false when the group was stopped first.
bool XetDownload::transfer(HttpConnection& connection, Job& job) {
  const XorbFetch& fetch = reconstruction_.fetches[job.fetch];
  std::vector<RangeReceiver> receivers;
  std::string range_header = "bytes=";
  for (std::size_t i = 0; i < job.ranges.size(); ++i) {
    std::vector<std::size_t> pending;
    for (auto t : job.terms[i]) {
      if (!is_done(t)) pending.push_back(t);
    }
    if (pending.empty()) continue;
    const XorbByteRange& range = fetch.ranges[job.ranges[i]];
    RangeReceiver receiver;
    receiver.range = &range;
    receiver.terms = std::move(pending);
    receiver.next_byte = range.first;
    receiver.next_chunk = range.chunks.begin;
    receiver.written.assign(receiver.terms.size(), 0);
    receiver.in_file.assign(receiver.terms.size(), 0);
    receiver.lengths.assign(receiver.terms.size(), {});
    if (!receivers.empty()) range_header += ',';
    range_header += fmt::format("{}-{}", range.first, range.last);
    receivers.push_back(std::move(receiver));
  }
  if (receivers.empty()) return true;
  for (auto& receiver : receivers) {
    receiver.decoder.emplace(
        [this, &receiver](std::string_view chunk) { write_chunk(receiver, chunk); });
  }
  const auto url = parse_url(fetch.url);
  if (!url) throw HubError(HubErrorKind::protocol, file_.path + ": a Xet URL is not usable");
  HttpRequest request;
  request.url = *url;
  // A presigned URL authorizes itself: neither the Hub's token nor the Xet token goes there.
  request.headers = {{"User-Agent", "rbee-hive/0.1"}, {"Range", range_header}};
  request.stall_timeout = policy_.stall_timeout;
  request.stall_min_bytes = policy_.stall_min_bytes;
  request.receive_buffer = 256 << 10;
  std::optional<ByteRangesReader> multipart;
  std::uint64_t single_offset = 0;
  int status = 0;
  auto deliver = [&](std::uint64_t offset, const char* data, std::size_t length) {
    for (auto& receiver : receivers) feed_receiver(receiver, offset, data, length);
  };
  request.on_head = [&](const HttpResponseHead& head) {
    status = head.status;
    if (status == 200) return true;  // the whole xorb: the ranges are picked out of it
    if (status != 206) return true;  // an error: its body is ignored
    const std::string boundary = byteranges_boundary(head.header("Content-Type"));
    if (!boundary.empty()) {
      multipart.emplace(boundary, deliver);
      return true;
    }
    const auto range = parse_content_range(head.header("Content-Range"));
    if (!range) return false;
    single_offset = range->first;
    return true;
  };
  request.on_body = [&](const char* data, std::size_t length) {
    if (status != 200 && status != 206) return true;
    received_ += length;
    if (multipart) {
      multipart->feed(data, length);
    } else {
      deliver(single_offset, data, length);
      single_offset += length;
    }
    return !group_stop_.stop_requested();
  };
  // Bytes of terms this answer leaves unfinished are not progress: they are fetched again.
  struct UnfinishedBytes {
    std::vector<RangeReceiver>& receivers;
    std::atomic<std::uint64_t>& in_flight;
    ~UnfinishedBytes() {
      for (const auto& receiver : receivers) {
        for (const auto bytes : receiver.in_file) in_flight -= bytes;
      }
    }
  } unfinished{receivers, in_flight_};
  HttpResult result;
  try {
    result = connection.perform(request, group_stop_.get_token());
  } catch (const XetFormatError& error) {
    throw HubError(HubErrorKind::protocol, fmt::format("{}: {}", file_.path, error.what()));
  }
  if (stop_.stop_requested() || result.outcome == HttpOutcome::cancelled ||
      group_stop_.stop_requested()) {
    if (stop_.stop_requested()) throw DownloadCancelled();
    return false;  // another worker ended the group; the job stays unfinished
  }
  const bool all_done = std::all_of(receivers.begin(), receivers.end(), [&](const auto& r) {
    return std::all_of(r.terms.begin(), r.terms.end(), [&](auto t) { return is_done(t); });
  });
  if (all_done) return true;
  const std::string what = fmt::format("{} (Xet xorb {})", file_.path, fetch.xorb.substr(0, 12));
  if (status == 403) throw HubError(HubErrorKind::forbidden, what + ": URL expired (403)", 403);
  if (status != 0 && status != 200 && status != 206) {
    throw hub_error_for(status, "", what, result.head.header("Retry-After"), false);
  }
  if (status == 206 && result.outcome == HttpOutcome::aborted) {
    throw HubError(HubErrorKind::protocol, what + ": an unusable Content-Range");
  }
  if (result.outcome == HttpOutcome::stalled) {
    throw HubError(HubErrorKind::network,
                   fmt::format("{}: stalled (under {} bytes in {} ms)", what,
                               policy_.stall_min_bytes, policy_.stall_timeout.count()));
  }
  throw HubError(HubErrorKind::network, fmt::format("{}: connection lost ({})", what,
                                                    result.outcome == HttpOutcome::complete
                                                        ? "the answer ended before every range"
                                                        : result.error));
}

// The part of [offset, offset + length) of the xorb that belongs to this range, in order.
void XetDownload::feed_receiver(RangeReceiver& receiver, std::uint64_t offset, const char* data,
                                std::size_t length) {
  const std::uint64_t end = offset + length;
  const std::uint64_t range_end = receiver.range->last + 1;
  if (end <= receiver.next_byte || offset >= range_end) return;
  if (offset > receiver.next_byte) {
    throw XetFormatError("the answer skips bytes of a requested range");
  }
  const std::uint64_t from = receiver.next_byte;
  const std::uint64_t to = std::min(end, range_end);
  receiver.decoder->feed(data + (from - offset), static_cast<std::size_t>(to - from));
  receiver.next_byte = to;
  if (to == range_end && !receiver.decoder->at_boundary()) {
    throw XetFormatError("a xorb range ends inside a chunk");
  }
}

void XetDownload::write_chunk(RangeReceiver& receiver, std::string_view chunk) {
  const std::uint32_t index = receiver.next_chunk++;
  if (index >= receiver.range->chunks.end) {
    throw XetFormatError("a xorb range holds more chunks than it should");
  }
  for (std::size_t k = 0; k < receiver.terms.size(); ++k) {
    const std::size_t t = receiver.terms[k];
    const Term& term = reconstruction_.terms[t];
    if (index < term.chunks.begin || index >= term.chunks.end) continue;
    const TermPlace& place = places_[t];
    const std::uint64_t decoded = receiver.written[k];
    if (decoded + chunk.size() > term.unpacked_length) {
      throw XetFormatError("a term decodes to more bytes than its length");
    }
    // Only what lies inside the file: the first term may begin before it.
    const std::uint64_t skip =
        place.skip > decoded ? std::min<std::uint64_t>(place.skip - decoded, chunk.size()) : 0;
    if (skip < chunk.size()) {
      write_at(fd_.get(), part_path_, chunk.data() + skip, chunk.size() - skip,
               place.begin + decoded + skip - place.skip);
      receiver.in_file[k] += chunk.size() - skip;
      in_flight_ += chunk.size() - skip;
    }
    receiver.written[k] += chunk.size();
    receiver.lengths[k].push_back(static_cast<std::uint32_t>(chunk.size()));
    if (index + 1 == term.chunks.end) {
      if (receiver.written[k] != term.unpacked_length) {
        throw XetFormatError("a term decodes to fewer bytes than its length");
      }
      chunk_lengths_[t] = std::move(receiver.lengths[k]);
      in_flight_ -= receiver.in_file[k];
      receiver.in_file[k] = 0;
      mark_done(t);
    }
  }
}

}  // namespace rbee::provisioner::xet
