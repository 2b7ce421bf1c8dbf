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
#include "part_file.hpp"
#include "rbee/provisioner/content_range.hpp"
#include "rbee/provisioner/retry.hpp"
#include "xet/xet_format.hpp"

#include "xet/xet_file_download.hpp"

namespace fs = std::filesystem;

namespace rbee::provisioner::xet {
namespace {

using namespace std::chrono_literals;

constexpr auto kTokenMargin = 60s;  // a token is renewed this long before it expires
constexpr int kMaxReplans = 5;      // reconstructions asked again without progress
constexpr std::size_t kCopyBuffer = 1 << 20;
// Copier threads: a copy's cost is mostly the kernel filling new pages of the part, which one
// thread does at about the speed the network brings bytes on loopback.
constexpr std::size_t kCopiers = 2;

bool covered(const std::vector<ByteRange>& done, std::uint64_t begin, std::uint64_t end) {
  for (const auto& range : done) {
    if (range.begin <= begin && end <= range.end) return true;
  }
  return begin == end;
}

}  // namespace

XetOutcome XetDownload::run(std::string& reason) {
  TimelineClock timeline;
  if (!plan(reason)) return XetOutcome::cas_unreachable;
  prepare_part();
  for (int replans = 0;;) {
    const std::uint64_t before = done_bytes();
    try {
      // A copy refused (its source changed since it was recorded): the next round fetches it.
      if (!assemble()) break;
    } catch (const UrlsExpired&) {
      replans = done_bytes() > before ? 1 : replans + 1;
      if (replans > kMaxReplans) {
        throw HubError(HubErrorKind::forbidden,
                       fmt::format("{}: the CAS's URLs keep expiring (403)", file_.path), 403);
      }
      notify_retry(0, fmt::format("{}: Xet transfer URLs expired; asking for new ones", file_.path),
                   {});
      if (!plan(reason)) throw HubError(HubErrorKind::network, reason);
    }
  }
  timeline.received();
  const std::uint64_t written_back = writeback_.started();
  hash_prefix();
  if (hashed_ != file_.size) {
    throw HubError(HubErrorKind::protocol, fmt::format("{}: Xet terms ended at {} of {} bytes",
                                                       file_.path, hashed_, file_.size));
  }
  const std::string actual = hash_.hex_digest();
  timeline.hashed();
  if (actual != hash_.expected()) {
    reason = fmt::format("{} mismatch for {}: expected {}, got {}", hash_.algorithm(), file_.path,
                         hash_.expected(), actual);
    fd_ = catalog::UniqueFd();
    staged_.discard();
    return XetOutcome::hash_mismatch;
  }
  staged_.publish(fd_.get());
  timeline.durable(events_, written_back);
  record_chunks();
  return XetOutcome::verified;
}

// Asks the CAS for the file's reconstruction. Before the first one, the bridge is still a way
// to the file: no token, no connection to the CAS, or a CAS that keeps failing or answers
// what cannot be used make this return false (with `reason`) for the caller to fall back.
// Later (URLs expired mid-file) the errors are thrown like any transfer's.
bool XetDownload::plan(std::string& reason) {
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
    std::optional<HubError> error;
    try {
      const CappedAnswer answer = request_reconstruction(access, version);
      const HttpResponseHead& head = answer.result.head;
      const int status = head.status;
      if (status == 200) {
        reconstruction_ = parse_reconstruction(answer.body, version, file_.size, {});
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
      error = hub_error_for(status, head.header("X-Error-Code"),
                            fmt::format("{} (Xet reconstruction)", file_.path),
                            head.header("Retry-After"), false);
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
CappedAnswer XetDownload::request_reconstruction(const XetAccess& access,
                                                 ReconstructionVersion version) {
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
  HttpConnection connection(hub_.settings());
  CappedAnswer answer = connection.perform_capped(request, limits.max_bytes, stop_);
  if (answer.too_large) {
    throw HubError(HubErrorKind::protocol,
                   fmt::format("{}: the Xet reconstruction is too large", file_.path));
  }
  const HttpResult& result = answer.result;
  if (result.outcome == HttpOutcome::cancelled) throw DownloadCancelled();
  if (result.outcome != HttpOutcome::complete) {
    throw HubError(
        HubErrorKind::network,
        fmt::format("cannot reach the Xet CAS at {} for {}: {}", url.origin(), file_.path,
                    result.outcome == HttpOutcome::stalled ? "no answer in time" : result.error));
  }
  return answer;
}

void XetDownload::place_terms() {
  const auto& terms = reconstruction_.terms;
  places_.assign(terms.size(), {});
  chunk_lengths_.assign(terms.size(), {});
  term_copying_.assign(terms.size(), false);
  copy_refused_.assign(terms.size(), false);
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
void XetDownload::mark_terms_on_disk_locked() {
  term_done_.assign(places_.size(), false);
  for (std::size_t i = 0; i < places_.size(); ++i) {
    term_done_[i] = covered(done_, places_[i].begin, places_[i].end);
  }
}

// The sidecar is durable before the part is extended (open_resumable_part), so a part cut
// short at any instant is never mistaken for a complete one.
void XetDownload::prepare_part() {
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

// Steps 3 and 4 at once: the copier copies what this machine's files hold while the transfers
// fetch the rest, and the caller's thread hashes both as they land (coordinate()). True when a
// copy was refused, and its term is still to fetch.
bool XetDownload::assemble() {
  if (stop_.stop_requested()) throw DownloadCancelled();
  plan_copies();
  // Their destructors stop and join them, whatever is thrown below.
  std::vector<std::jthread> copiers;
  if (!copies_.empty()) {
    {
      std::lock_guard lock(mutex_);
      copiers_running_ = kCopiers;
      copy_failure_ = nullptr;
    }
    for (std::size_t stripe = 0; stripe < kCopiers; ++stripe) {
      copiers.emplace_back(
          [this, stripe](std::stop_token stop) { copy_planned_terms(stop, stripe); });
    }
  }
  fetch_missing_terms();
  copiers.clear();  // joined
  report_progress();
  if (copy_failure_) std::rethrow_exception(copy_failure_);
  return std::any_of(copies_.begin(), copies_.end(),
                     [this](const auto& copy) { return !is_done(copy.first); });
}

void XetDownload::plan_copies() {
  copies_.clear();
  if (!reuse_) return;
  for (std::size_t i = 0; i < reconstruction_.terms.size(); ++i) {
    if (is_done(i) || copy_refused_[i]) continue;
    const Term& term = reconstruction_.terms[i];
    auto source = reuse_->find(term.xorb, term.chunks);
    if (!source || source->length != term.unpacked_length) continue;
    copies_.emplace_back(i, std::move(*source));
  }
  std::lock_guard lock(mutex_);
  for (const auto& copy : copies_) term_copying_[copy.first] = true;
}

void XetDownload::copy_planned_terms(const std::stop_token& stop, std::size_t stripe) {
  OpenSource file;
  try {
    for (std::size_t i = stripe; i < copies_.size(); i += kCopiers) {
      if (stop.stop_requested() || stop_.stop_requested()) break;
      const auto& [term, source] = copies_[i];
      const bool copied = copy_from(source, places_[term], file);
      if (copied) chunk_lengths_[term] = source.chunk_lengths;
      std::lock_guard lock(mutex_);
      term_copying_[term] = false;
      if (copied) {
        mark_done_locked(term);
        copied_unreported_ += places_[term].end - places_[term].begin;
      } else {
        copy_refused_[term] = true;
      }
    }
  } catch (...) {  // a disk error writing the part: the caller rethrows it
    std::lock_guard lock(mutex_);
    if (!copy_failure_) copy_failure_ = std::current_exception();
  }
  std::lock_guard lock(mutex_);
  if (--copiers_running_ > 0) return;
  std::fill(term_copying_.begin(), term_copying_.end(), false);  // stopped: for the transfers
  changed_.notify_all();
}

// Copies the term from the file that holds it; false when that file is no longer as recorded.
bool XetDownload::copy_from(const ReuseSource& source, const TermPlace& place, OpenSource& file) {
  const int in = open_copy_source(source, file);
  if (in < 0) return false;
  std::uint64_t from = source.offset + place.skip;
  for (std::uint64_t at = place.begin; at < place.end;) {
    auto in_offset = static_cast<loff_t>(from), out_offset = static_cast<loff_t>(at);
    const ssize_t n = ::copy_file_range(in, &in_offset, fd_.get(), &out_offset,
                                        static_cast<std::size_t>(place.end - at), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == ENOSPC || errno == EDQUOT || errno == EFBIG)) {
      throw_disk_error("write", part_path_, errno);
    }
    // Another file system, an old kernel, or a read error: the plain copy tells which.
    if (n < 0) return copy_by_reading(in, from, at, place.end);
    if (n == 0) return false;  // the source is shorter than recorded
    at += static_cast<std::uint64_t>(n);
    from += static_cast<std::uint64_t>(n);
  }
  return true;
}

bool XetDownload::copy_by_reading(int in, std::uint64_t from, std::uint64_t at, std::uint64_t end) {
  std::vector<char> buffer(kCopyBuffer);
  while (at < end) {
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), end - at));
    const ssize_t n = ::pread(in, buffer.data(), want, static_cast<off_t>(from));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    write_at(fd_.get(), part_path_, buffer.data(), static_cast<std::size_t>(n), at);
    at += static_cast<std::uint64_t>(n);
    from += static_cast<std::uint64_t>(n);
  }
  return true;
}

// The source's file, opened once for all the terms it holds (they come in file order, so
// mostly from the same file), without following symlinks; -1 when it is no longer as recorded.
int XetDownload::open_copy_source(const ReuseSource& source, OpenSource& file) {
  if (file.fd && file.model_dir == source.model_dir && file.repo_path == source.repo_path) {
    return file.fd.get();
  }
  file = {};
  catalog::UniqueFd in;
  try {
    const auto model = catalog::Directory::open(source.model_dir, false);
    const auto [parent, name] = split_parent(source.repo_path);
    const auto folder = model.descend(parent, false);
    if (!folder) return -1;
    in = folder->open_file(name, O_RDONLY);
  } catch (const std::exception&) {
    return -1;
  }
  struct stat info {};
  if (!in || ::fstat(in.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
      static_cast<std::uint64_t>(info.st_size) != source.file_size) {
    return -1;
  }
  file = {source.model_dir, source.repo_path, std::move(in)};
  return file.fd.get();
}

bool XetDownload::is_done(std::size_t term) {
  std::lock_guard lock(mutex_);
  return term_done_[term];
}

bool XetDownload::is_done_or_copying(std::size_t term) {
  std::lock_guard lock(mutex_);
  return term_done_[term] || term_copying_[term];
}

void XetDownload::mark_done(std::size_t term) {
  std::lock_guard lock(mutex_);
  mark_done_locked(term);
}

void XetDownload::mark_done_locked(std::size_t term) {
  term_done_[term] = true;
  done_.push_back({places_[term].begin, places_[term].end});
  done_ = merged_ranges(std::move(done_));
  changed_.notify_all();
}

std::uint64_t XetDownload::done_bytes() {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (const auto& range : done_) total += range.end - range.begin;
  return total;
}

void XetDownload::hash_prefix() {
  std::uint64_t prefix = 0;
  {
    std::lock_guard lock(mutex_);
    if (!done_.empty() && done_.front().begin == 0) prefix = done_.front().end;
  }
  if (prefix > hashed_) {
    hash_file_range(fd_.get(), part_path_, hashed_, prefix, hash_);
    hashed_ = prefix;
    writeback_.advance(fd_.get(), hashed_);
    if (events_.prefix_committed) events_.prefix_committed(fd_.get(), hashed_);
  }
}

// Copied bytes are told to `reused` before the progress that first counts them, both read under
// one lock: the caller counts what progress adds beyond them as fetched over the network.
void XetDownload::report_progress() {
  std::vector<ByteRange> done;
  std::uint64_t copied = 0;
  {
    std::lock_guard lock(mutex_);
    done = done_;
    copied = std::exchange(copied_unreported_, 0);
  }
  if (copied > 0 && events_.reused) events_.reused(copied);
  std::uint64_t total = in_flight_.load();
  for (const auto& range : done) total += range.end - range.begin;
  if (events_.progress) events_.progress(std::min(total, file_.size));
  if (events_.ranges_written && fd_) events_.ranges_written(fd_.get(), done);
}

// Terms are committed only once their bytes are on disk: fdatasync, then the sidecar.
void XetDownload::persist() {
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

void XetDownload::record_chunks() {
  if (!reuse_) return;
  std::vector<ChunkSpan> spans;
  for (std::size_t i = 0; i < reconstruction_.terms.size(); ++i) {
    if (places_[i].skip > 0) continue;  // not the whole term: never a source
    const Term& term = reconstruction_.terms[i];
    spans.push_back(
        {term.xorb, term.chunks, places_[i].begin, term.unpacked_length, chunk_lengths_[i]});
  }
  if (const auto error = reuse_->record(model_, stored_path(file_), fd_.get(), std::move(spans))) {
    notify_retry(
        0,
        fmt::format("{}: its Xet chunks could not be recorded for reuse ({})", file_.path, *error),
        {});
  }
}

void XetDownload::notify_retry(int attempt, const std::string& reason,
                               std::chrono::milliseconds delay) {
  std::lock_guard lock(events_mutex_);
  if (events_.retrying) events_.retrying(attempt, reason, delay);
}

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
