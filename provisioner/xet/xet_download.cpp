#include "xet/xet_download.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <exception>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "adaptive_connections.hpp"
#include "file_hash.hpp"
#include "http_connection.hpp"
#include "ranged_download.hpp"
#include "rbee/provisioner/content_range.hpp"
#include "retry.hpp"
#include "xet/xet_format.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace rbee::provisioner::xet {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kTick = 100ms;       // hashing and progress cadence
constexpr auto kPersistEvery = 1s;  // fdatasync + sidecar cadence
constexpr auto kTokenMargin = 60s;  // a token is renewed this long before it expires
constexpr int kMaxReplans = 5;
constexpr int kStartConnections = 4;  // the adaptive controller's first step, as for ranges      //
                                      // reconstructions asked again without progress
constexpr std::size_t kCopyBuffer = 1 << 20;

// The URLs of a reconstruction expired (a transfer answered 403): ask for a new one.
struct UrlsExpired {};

// Where a term lands in the file: [begin, end) after clipping the first term's skipped bytes.
struct TermPlace {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::uint64_t skip = 0;  // decoded bytes of the term before `begin` (the first term only)
};

bool covered(const std::vector<ByteRange>& done, std::uint64_t begin, std::uint64_t end) {
  for (const auto& range : done) {
    if (range.begin <= begin && end <= range.end) return true;
  }
  return begin == end;
}

void write_all(int fd, const fs::path& path, const char* data, std::size_t length,
               std::uint64_t offset) {
  for (std::size_t done = 0; done < length;) {
    const ssize_t n = ::pwrite(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_disk_error("write", path, errno);
    done += static_cast<std::size_t>(n);
  }
}

// One presigned GET's worth of work: the ranges of a fetch that some needed term lies in.
struct Job {
  std::size_t fetch = 0;
  std::vector<std::size_t> ranges;              // indices into the fetch's ranges
  std::vector<std::vector<std::size_t>> terms;  // per range: the terms it serves
  int failures = 0;
  bool taken = false;
  bool done = false;
};

class XetDownload {
 public:
  XetDownload(const HubClient& hub, XetTokens& tokens, ChunkIndex* reuse,
              const DownloadPolicy& policy, const catalog::ModelId& repo, const std::string& commit,
              const XetFile& file, const catalog::Directory& model, const StagedFile& staged,
              const std::stop_token& stop, const DownloadEvents& events,
              ConnectionBudget* extra_connections)
      : hub_(hub),
        tokens_(tokens),
        reuse_(reuse),
        policy_(policy),
        repo_(repo),
        commit_(commit),
        file_(file.file),
        xet_hash_(file.xet_hash),
        model_(model),
        staged_(staged),
        part_path_(staged.part_path()),
        stop_(stop),
        events_(events),
        extra_connections_(extra_connections),
        hash_(file.file) {}

  XetOutcome run(std::string& reason) {
    if (!plan(reason)) return XetOutcome::cas_unreachable;
    prepare_part();
    for (int replans = 0;;) {
      const std::uint64_t before = done_bytes();
      copy_reused_terms();
      try {
        fetch_missing_terms();
        break;
      } catch (const UrlsExpired&) {
        replans = done_bytes() > before ? 1 : replans + 1;
        if (replans > kMaxReplans) {
          throw HubError(HubErrorKind::forbidden,
                         fmt::format("{}: the CAS's URLs keep expiring (403)", file_.path), 403);
        }
        notify_retry(
            0, fmt::format("{}: Xet transfer URLs expired; asking for new ones", file_.path), {});
        if (!plan(reason)) throw HubError(HubErrorKind::network, reason);
      }
    }
    hash_prefix();
    if (hashed_ != file_.size) {
      throw HubError(HubErrorKind::protocol, fmt::format("{}: Xet terms ended at {} of {} bytes",
                                                         file_.path, hashed_, file_.size));
    }
    const std::string actual = hash_.hex_digest();
    if (actual != hash_.expected()) {
      reason = fmt::format("{} mismatch for {}: expected {}, got {}", hash_.algorithm(), file_.path,
                           hash_.expected(), actual);
      fd_ = catalog::UniqueFd();
      staged_.discard();
      return XetOutcome::hash_mismatch;
    }
    staged_.publish(fd_.get());
    record_chunks();
    return XetOutcome::verified;
  }

 private:
  // --- 1. token and reconstruction ------------------------------------------------------

  // Asks the CAS for the file's reconstruction. Before the first one, the bridge is still a way
  // to the file: no token, no connection to the CAS, or a CAS that keeps failing or answers
  // what cannot be used make this return false (with `reason`) for the caller to fall back.
  // Later (URLs expired mid-file) the errors are thrown like any transfer's.
  bool plan(std::string& reason) {
    ReconstructionVersion version = ReconstructionVersion::v2;
    std::string refused;
    int failures = 0;
    const auto fall_back = [&](const std::string& why) {
      if (stop_.stop_requested()) throw DownloadCancelled();
      reason = why;
      return false;
    };
    for (;;) {
      if (stop_.stop_requested()) throw DownloadCancelled();
      XetAccess access;
      try {
        access = tokens_.get(repo_, commit_, stop_, refused);
      } catch (const HubError& error) {
        if (!planned_) return fall_back(fmt::format("no Xet read token ({})", error.what()));
        throw;
      }
      std::string body;
      std::optional<HubError> error;
      try {
        const HttpResult result = request_reconstruction(access, version, body);
        const int status = result.head.status;
        if (status == 200) {
          reconstruction_ = parse_reconstruction(body, version, file_.size, {});
          place_terms();
          planned_ = true;
          return true;
        }
        if ((status == 404 || status == 501) && version == ReconstructionVersion::v2) {
          version = ReconstructionVersion::v1;  // a CAS without v2
          continue;
        }
        if (status == 401 && refused != access.access_token) {
          refused = access.access_token;  // expired or revoked: one fresh token
          continue;
        }
        error = hub_error_for(status, result.head.header("X-Error-Code"),
                              fmt::format("{} (Xet reconstruction)", file_.path),
                              result.head.header("Retry-After"), false);
      } catch (const XetFormatError& bad) {
        error = HubError(HubErrorKind::protocol, fmt::format("{}: {}", file_.path, bad.what()));
      } catch (const HubError& failed) {
        error = failed;
      }
      if (stop_.stop_requested()) throw DownloadCancelled();
      std::chrono::milliseconds delay{};
      try {
        if (error->kind() == HubErrorKind::network && !planned_) throw *error;  // unreachable
        delay = retry_delay_or_throw(policy_, file_.path, *error, failures);
      } catch (const std::exception& given_up) {
        if (!planned_)
          return fall_back(fmt::format("the Xet CAS cannot serve it ({})", given_up.what()));
        throw;
      }
      notify_retry(failures, error->what(), delay);
      if (!sleep_unless_stopped(delay, stop_)) throw DownloadCancelled();
    }
  }

  // GET {cas}/v2/reconstructions/{hash} with the Xet token (and nothing of the Hub's).
  HttpResult request_reconstruction(const XetAccess& access, ReconstructionVersion version,
                                    std::string& body) {
    const ReconstructionLimits limits;
    Url url = access.cas;
    url.target =
        (url.target == "/" ? "" : url.target) +
        (version == ReconstructionVersion::v2 ? "/v2/reconstructions/" : "/v1/reconstructions/") +
        xet_hash_;
    HttpRequest request;
    request.url = url;
    request.headers = {{"User-Agent", "rbee-hive/0.1"},
                       {"Authorization", "Bearer " + access.access_token}};
    request.stall_timeout = policy_.stall_timeout;
    request.stall_min_bytes = 1;
    int status = 0;
    bool too_large = false;
    request.on_head = [&](const HttpResponseHead& head) {
      status = head.status;
      return true;
    };
    request.on_body = [&](const char* data, std::size_t length) {
      if (status != 200) return true;
      if (body.size() + length > limits.max_bytes) {
        too_large = true;
        return false;
      }
      body.append(data, length);
      return true;
    };
    HttpConnection connection(hub_.settings());
    HttpResult result = connection.perform(request, stop_);
    if (too_large) {
      throw HubError(HubErrorKind::protocol,
                     fmt::format("{}: the Xet reconstruction is too large", file_.path));
    }
    if (result.outcome == HttpOutcome::cancelled) throw DownloadCancelled();
    if (result.outcome != HttpOutcome::complete) {
      throw HubError(
          HubErrorKind::network,
          fmt::format("cannot reach the Xet CAS at {} for {}: {}", url.origin(), file_.path,
                      result.outcome == HttpOutcome::stalled ? "no answer in time" : result.error));
    }
    return result;
  }

  void place_terms() {
    const auto& terms = reconstruction_.terms;
    places_.assign(terms.size(), {});
    chunk_lengths_.assign(terms.size(), {});
    std::uint64_t at = 0;
    std::uint64_t skip = reconstruction_.offset_into_first_range;
    for (std::size_t i = 0; i < terms.size(); ++i) {
      const std::uint64_t length = terms[i].unpacked_length - skip;
      places_[i] = {at, at + length, skip};
      at += length;
      skip = 0;
    }
    std::lock_guard lock(mutex_);
    mark_terms_on_disk_locked();
  }

  // A term is done when the byte ranges on disk cover it.
  void mark_terms_on_disk_locked() {
    term_done_.assign(places_.size(), false);
    for (std::size_t i = 0; i < places_.size(); ++i) {
      term_done_[i] = covered(done_, places_[i].begin, places_[i].end);
    }
  }

  // --- 2. the part ------------------------------------------------------------------------

  // The sidecar is durable before the part is extended (open_resumable_part), so a part cut
  // short at any instant is never mistaken for a complete one.
  void prepare_part() {
    auto part = open_resumable_part(staged_, file_);
    fd_ = std::move(part.fd);
    if (::ftruncate(fd_.get(), static_cast<off_t>(file_.size)) != 0) {
      throw_disk_error("size", part_path_, errno);
    }
    {
      std::lock_guard lock(mutex_);
      done_ = std::move(part.done);
      mark_terms_on_disk_locked();
    }
    persisted_ = done_;
    hash_prefix();
    report_progress();  // the first report is what was on disk already (not fetched, not copied)
  }

  // --- 3. reuse -----------------------------------------------------------------------------

  void copy_reused_terms() {
    if (!reuse_) return;
    std::uint64_t copied = 0;
    for (std::size_t i = 0; i < reconstruction_.terms.size(); ++i) {
      if (stop_.stop_requested()) throw DownloadCancelled();
      if (is_done(i)) continue;
      const Term& term = reconstruction_.terms[i];
      const auto source = reuse_->find(term.xorb, term.chunks);
      if (!source || source->length != term.unpacked_length) continue;
      if (!copy_from(*source, places_[i])) continue;
      chunk_lengths_[i] = source->chunk_lengths;
      copied += places_[i].end - places_[i].begin;
      mark_done(i);
    }
    if (copied > 0) {
      if (events_.reused) events_.reused(copied);
      report_progress();
      persist();  // copied terms are committed like fetched ones: a restart keeps them
    }
  }

  // Copies the term from the file that holds it; false when that file is no longer as
  // recorded. Opened once, without following symlinks: a file renamed over it meanwhile (a
  // new revision) leaves this descriptor on the old, unchanged bytes.
  bool copy_from(const ReuseSource& source, const TermPlace& place) {
    catalog::UniqueFd in;
    try {
      const auto model = catalog::Directory::open(source.model_dir, false);
      const auto [parent, name] = split_parent(source.repo_path);
      const auto folder = model.descend(parent, false);
      if (!folder) return false;
      in = folder->open_file(name, O_RDONLY);
    } catch (const std::exception&) {
      return false;
    }
    struct stat info {};
    if (!in || ::fstat(in.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
        static_cast<std::uint64_t>(info.st_size) != source.file_size) {
      return false;
    }
    std::vector<char> buffer(kCopyBuffer);
    std::uint64_t from = source.offset + place.skip;
    for (std::uint64_t at = place.begin; at < place.end;) {
      const std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), place.end - at));
      const ssize_t n = ::pread(in.get(), buffer.data(), want, static_cast<off_t>(from));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      write_all(fd_.get(), part_path_, buffer.data(), static_cast<std::size_t>(n), at);
      at += static_cast<std::uint64_t>(n);
      from += static_cast<std::uint64_t>(n);
    }
    return true;
  }

  // --- 4. transfers -------------------------------------------------------------------------

  void fetch_missing_terms() {
    plan_jobs();
    if (jobs_.empty()) return;
    expired_ = false;
    failure_ = nullptr;
    group_stop_ = std::stop_source();
    roster_.reset();
    // As many connections as pay off (adaptive_connections.hpp): on a fast link a few beat
    // 32, which only contend for the same cores; under a per-connection cap more help.
    const int ceiling = static_cast<int>(std::min<std::size_t>(
        jobs_.size(), static_cast<std::size_t>(std::max(1, policy_.connections))));
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
  void add_workers() {
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

  void plan_jobs() {
    jobs_.clear();
    std::map<std::size_t, std::size_t> job_of_fetch;
    for (std::size_t t = 0; t < reconstruction_.terms.size(); ++t) {
      if (is_done(t)) continue;
      const Term& term = reconstruction_.terms[t];
      for (std::size_t f = 0; f < reconstruction_.fetches.size(); ++f) {
        const XorbFetch& fetch = reconstruction_.fetches[f];
        if (fetch.xorb != term.xorb) continue;
        const auto range =
            std::find_if(fetch.ranges.begin(), fetch.ranges.end(),
                         [&](const auto& r) { return r.chunks.contains(term.chunks); });
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

  // Until every worker is done: steer the connection count, hash the growing prefix, report
  // progress, persist.
  void coordinate() {
    auto last_persist = Clock::now();
    std::unique_lock lock(mutex_);
    while (roster_.running() > 0) {
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
  void work() {
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
  std::optional<std::size_t> claim_job(bool& counted) {
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

  // One range of a job as its bytes arrive: decoded chunk by chunk, each chunk written into
  // every term of the range that holds it.
  struct RangeReceiver {
    const XorbByteRange* range = nullptr;
    std::vector<std::size_t> terms;
    std::uint64_t next_byte = 0;  // the xorb offset expected next
    std::uint32_t next_chunk = 0;
    std::vector<std::uint64_t> written;  // per term: decoded bytes so far
    std::vector<std::uint64_t> in_file;  // per unfinished term: bytes written to the part
    std::vector<std::vector<std::uint32_t>> lengths;
    std::optional<ChunkDecoder> decoder;
  };

  // True when every term of the job is on disk; false when the group was stopped first.
  bool transfer(HttpConnection& connection, Job& job) {
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
  void feed_receiver(RangeReceiver& receiver, std::uint64_t offset, const char* data,
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

  void write_chunk(RangeReceiver& receiver, std::string_view chunk) {
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
        write_all(fd_.get(), part_path_, chunk.data() + skip, chunk.size() - skip,
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

  // --- 5. hashing, progress, persistence, records ---------------------------------------------

  bool is_done(std::size_t term) {
    std::lock_guard lock(mutex_);
    return term_done_[term];
  }

  void mark_done(std::size_t term) {
    std::lock_guard lock(mutex_);
    term_done_[term] = true;
    done_.push_back({places_[term].begin, places_[term].end});
    done_ = merged_ranges(std::move(done_));
    changed_.notify_all();
  }

  std::uint64_t done_bytes() {
    std::lock_guard lock(mutex_);
    std::uint64_t total = 0;
    for (const auto& range : done_) total += range.end - range.begin;
    return total;
  }

  void hash_prefix() {
    std::uint64_t prefix = 0;
    {
      std::lock_guard lock(mutex_);
      if (!done_.empty() && done_.front().begin == 0) prefix = done_.front().end;
    }
    if (prefix > hashed_) {
      hash_file_range(fd_.get(), part_path_, hashed_, prefix, hash_);
      hashed_ = prefix;
      if (events_.prefix_committed) events_.prefix_committed(fd_.get(), hashed_);
    }
  }

  void report_progress() {
    std::vector<ByteRange> done;
    {
      std::lock_guard lock(mutex_);
      done = done_;
    }
    std::uint64_t total = in_flight_.load();
    for (const auto& range : done) total += range.end - range.begin;
    if (events_.progress) events_.progress(std::min(total, file_.size));
    if (events_.ranges_written && fd_) events_.ranges_written(fd_.get(), done);
  }

  // Terms are committed only once their bytes are on disk: fdatasync, then the sidecar.
  void persist() {
    std::vector<ByteRange> done;
    {
      std::lock_guard lock(mutex_);
      done = done_;
    }
    if (done == persisted_) return;
    if (::fdatasync(fd_.get()) != 0) {
      const int error = errno;
      fd_ = catalog::UniqueFd();
      staged_.discard();  // which pages reached the disk is unknown: nothing is trusted
      throw_disk_error("sync", part_path_, error);
    }
    staged_.write_sidecar(range_sidecar_json(file_, hash_.expected(), done));
    persisted_ = std::move(done);
  }

  void record_chunks() {
    if (!reuse_) return;
    std::vector<ChunkSpan> spans;
    for (std::size_t i = 0; i < reconstruction_.terms.size(); ++i) {
      if (places_[i].skip > 0) continue;  // not the whole term: never a source
      const Term& term = reconstruction_.terms[i];
      spans.push_back(
          {term.xorb, term.chunks, places_[i].begin, term.unpacked_length, chunk_lengths_[i]});
    }
    if (const auto error = reuse_->record(model_, file_.path, fd_.get(), std::move(spans))) {
      notify_retry(0,
                   fmt::format("{}: its Xet chunks could not be recorded for reuse ({})",
                               file_.path, *error),
                   {});
    }
  }

  void notify_retry(int attempt, const std::string& reason, std::chrono::milliseconds delay) {
    std::lock_guard lock(events_mutex_);
    if (events_.retrying) events_.retrying(attempt, reason, delay);
  }

  const HubClient& hub_;
  XetTokens& tokens_;
  ChunkIndex* reuse_;
  const DownloadPolicy& policy_;
  const catalog::ModelId& repo_;
  const std::string& commit_;
  const FileToFetch& file_;
  const std::string xet_hash_;
  const catalog::Directory& model_;
  const StagedFile& staged_;
  const fs::path part_path_;
  const std::stop_token& stop_;
  const DownloadEvents& events_;
  ConnectionBudget* extra_connections_;

  FileHash hash_;  // the caller's thread only
  std::uint64_t hashed_ = 0;
  std::vector<ByteRange> persisted_;
  catalog::UniqueFd fd_;
  bool planned_ = false;  // a reconstruction was had: from now on, errors are thrown
  Reconstruction reconstruction_;
  std::vector<TermPlace> places_;
  std::vector<std::vector<std::uint32_t>> chunk_lengths_;  // per term, written by its one writer
  std::vector<Job> jobs_;
  std::atomic<std::uint64_t> in_flight_{0};        // bytes of unfinished terms written so far
  std::atomic<std::uint64_t> received_{0};         // transfer body bytes, for the controller
  std::optional<AdaptiveConnections> controller_;  // the coordinator's thread only

  std::mutex mutex_;  // guards what follows
  std::condition_variable changed_;
  std::vector<ByteRange> done_;
  std::vector<bool> term_done_;
  WorkerRoster roster_;                // the workers running (under mutex_)
  std::size_t target_workers_ = 1;     // the controller's target, for the workers to read
  std::vector<std::jthread> workers_;  // started by the coordinator; last of these, joined first
  bool expired_ = false;
  std::exception_ptr failure_;
  std::stop_source group_stop_;

  std::mutex events_mutex_;
};

}  // namespace

XetAccess XetTokens::get(const catalog::ModelId& repo, const std::string& revision,
                         const std::stop_token& stop, const std::string& refused) {
  const std::string key = repo.str() + "@" + revision;
  std::lock_guard lock(mutex_);
  const auto found = by_repo_.find(key);
  const bool fresh = found != by_repo_.end() && found->second.access_token != refused &&
                     std::chrono::system_clock::now() + kTokenMargin < found->second.expires;
  if (fresh) return found->second;
  XetAccess access = hub_.xet_read_token(repo, revision, stop);
  by_repo_[key] = access;
  return access;
}

XetOutcome fetch_with_xet(const HubClient& hub, XetTokens& tokens, ChunkIndex* reuse,
                          const DownloadPolicy& policy, const catalog::ModelId& repo,
                          const std::string& commit, const XetFile& file,
                          const catalog::Directory& model, const StagedFile& staged,
                          const std::stop_token& stop, const DownloadEvents& events,
                          ConnectionBudget* extra_connections, std::string& reason) {
  XetDownload download(hub, tokens, reuse, policy, repo, commit, file, model, staged, stop, events,
                       extra_connections);
  return download.run(reason);
}

}  // namespace rbee::provisioner::xet
