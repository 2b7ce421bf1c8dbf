#pragma once
// XetDownload (internal): one file's download from the Xet storage, the steps xet_download.hpp
// lists. xet_download.cpp holds steps 1-3 and 5 (reconstruction, part, reuse, hashing and
// records); xet_transfers.cpp holds step 4, the parallel transfers.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "adaptive_connections.hpp"
#include "file_hash.hpp"
#include "http_connection.hpp"
#include "part_file.hpp"
#include "xet/xet_download.hpp"
#include "xet/xet_format.hpp"

namespace rbee::provisioner::xet {

using Clock = std::chrono::steady_clock;

// The URLs of a reconstruction expired (a transfer answered 403): ask for a new one.
struct UrlsExpired {};

// Where a term lands in the file: [begin, end) after clipping the first term's skipped bytes.
struct TermPlace {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::uint64_t skip = 0;  // decoded bytes of the term before `begin` (the first term only)
};

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

  XetOutcome run(std::string& reason);

 private:
  // --- 1. token and reconstruction ------------------------------------------------------

  // Asks the CAS for the file's reconstruction. Before the first one, the bridge is still a way
  // to the file: no token, no connection to the CAS, or a CAS that keeps failing or answers
  // what cannot be used make this return false (with `reason`) for the caller to fall back.
  // Later (URLs expired mid-file) the errors are thrown like any transfer's.
  bool plan(std::string& reason);

  // GET {cas}/v2/reconstructions/{hash} with the Xet token (and nothing of the Hub's).
  CappedAnswer request_reconstruction(const XetAccess& access, ReconstructionVersion version);

  void place_terms();

  // A term is done when the byte ranges on disk cover it.
  void mark_terms_on_disk_locked();

  // --- 2. the part ------------------------------------------------------------------------

  // The sidecar is durable before the part is extended (open_resumable_part), so a part cut
  // short at any instant is never mistaken for a complete one.
  void prepare_part();

  // --- 3. reuse -----------------------------------------------------------------------------

  // Steps 3 and 4 at once: the copier copies what this machine's files hold while the
  // transfers fetch the rest, and the caller's thread hashes both as they land (coordinate()).
  // True when a copy was refused, and its term is still to fetch.
  bool assemble();

  // The terms a file on this machine holds (not refused before) are reserved for the copier:
  // the transfers leave them alone.
  void plan_copies();

  // The file a copier reads from, open for the terms that follow from the same file.
  struct OpenSource {
    std::filesystem::path model_dir;
    std::string repo_path;
    catalog::UniqueFd fd;
  };

  // A copier's thread: copies its stripe of the planned terms (every kCopiers-th, so the
  // copiers advance through the file together and the hashed prefix grows), marking each done;
  // a term whose source is no longer as recorded is refused, for the next round to fetch.
  void copy_planned_terms(const std::stop_token& stop, std::size_t stripe);

  // Copies the term from the file that holds it; false when that file is no longer as
  // recorded. Opened without following symlinks (and kept open for the next term from the same
  // file): a file renamed over it meanwhile (a new revision) leaves this descriptor on the old,
  // unchanged bytes.
  bool copy_from(const ReuseSource& source, const TermPlace& place, OpenSource& file);

  // The same through a buffer, where copy_file_range cannot (another file system).
  bool copy_by_reading(int in, std::uint64_t from, std::uint64_t at, std::uint64_t end);

  // The source's file, opened once for all the terms it holds (they come in file order, so
  // mostly from the same file), without following symlinks; -1 when it is no longer as
  // recorded.
  int open_copy_source(const ReuseSource& source, OpenSource& file);

  // --- 4. transfers -------------------------------------------------------------------------

  void fetch_missing_terms();

  // Up to the controller's target, while jobs wait: the caller holds one connection for this
  // file, the others come from the budget.
  void add_workers();

  void plan_jobs();

  // Until every worker and the copier are done: steer the connection count, hash the growing
  // prefix, report progress, persist.
  void coordinate();

  // A worker is counted in roster_ until it leaves. A surplus worker (the target fell) is
  // counted out by claim_job() in the same step under mutex_ that decided it (WorkerRoster), so
  // exactly the surplus leaves, never every worker at once; any other departure (no work left,
  // stopped, failed) is counted when work() returns.
  void work();

  // The next job for a worker, or nullopt: the worker leaves. A surplus worker is counted out
  // here (`counted` cleared), under the lock that decided it.
  std::optional<std::size_t> claim_job(bool& counted);

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
  bool transfer(HttpConnection& connection, Job& job);

  // The part of [offset, offset + length) of the xorb that belongs to this range, in order.
  void feed_receiver(RangeReceiver& receiver, std::uint64_t offset, const char* data,
                     std::size_t length);

  void write_chunk(RangeReceiver& receiver, std::string_view chunk);

  // --- 5. hashing, progress, persistence, records ---------------------------------------------

  bool is_done(std::size_t term);

  // Done, or reserved for the copier.
  bool is_done_or_copying(std::size_t term);

  void mark_done(std::size_t term);
  void mark_done_locked(std::size_t term);

  std::uint64_t done_bytes();

  void hash_prefix();

  void report_progress();

  // Terms are committed only once their bytes are on disk: fdatasync, then the sidecar.
  void persist();

  void record_chunks();

  void notify_retry(int attempt, const std::string& reason, std::chrono::milliseconds delay);

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
  const std::filesystem::path part_path_;
  const std::stop_token& stop_;
  const DownloadEvents& events_;
  ConnectionBudget* extra_connections_;

  FileHash hash_;  // the caller's thread only, like what follows
  std::uint64_t hashed_ = 0;
  Writeback writeback_;  // behind the hashed prefix
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
  // The copier's work (planned before it starts, then its own), and what it left for the
  // transfers: refused terms are fetched by the next round.
  std::vector<std::pair<std::size_t, ReuseSource>> copies_;
  std::vector<bool> term_copying_;
  std::vector<bool> copy_refused_;
  std::size_t copiers_running_ = 0;
  std::uint64_t copied_unreported_ = 0;  // copied, not yet told to `reused`
  std::exception_ptr copy_failure_;

  std::mutex events_mutex_;
};

}  // namespace rbee::provisioner::xet
