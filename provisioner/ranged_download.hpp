#pragma once
// Ranged downloads (internal): one large file over several connections, each fetching a byte
// range into a preallocated part file (staging.hpp) with pwrite. The ranges already on disk are
// persisted beside it in a sidecar (JSON, replaced atomically and durably after an fdatasync
// of the part), so a restart resumes every range, not just the first.
//
// Verification stays one pass: the caller's thread hashes the contiguous prefix as ranges
// complete, re-reading freshly written data from the page cache, so the hash is ready moments
// after the last byte. A connection that finishes its range splits the largest remaining one
// (work stealing), so one slow connection never holds the tail of the file.

#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "rbee/provisioner/file_downloader.hpp"
#include "staging.hpp"

namespace rbee::provisioner {

// The done ranges a sidecar records, merged and sorted; nullopt when the text is not a sidecar
// of this very file (version 1, its size and checksum, every range within the file). The sidecar
// is outside input after a crash or on a shared cache: whatever it holds, this never throws.
std::optional<std::vector<ByteRange>> parse_range_sidecar(std::string_view text,
                                                          std::uint64_t file_size,
                                                          std::string_view checksum);

// The sidecar's text for `done` (sorted, merged) of `file` with its expected checksum.
std::string range_sidecar_json(const FileToFetch& file, std::string_view checksum,
                               const std::vector<ByteRange>& done);

// A part opened for a download that writes it out of order (ranges, Xet terms), and what of it
// is on disk already.
struct ResumablePart {
  catalog::UniqueFd fd;
  std::vector<ByteRange> done;  // sorted, merged
};
// Opens (creating) the part of `file` and learns what it holds: the ranges its sidecar records,
// else the prefix a single connection wrote (a part without a sidecar is always one), else
// nothing (the part is then emptied). Before it returns, a sidecar naming exactly `done` is
// durable, so the caller may extend or preallocate the part: after a crash at any instant a
// part full of holes is never mistaken for a contiguous prefix. Throws DownloadError (disk).
ResumablePart open_resumable_part(const StagedFile& staged, const FileToFetch& file);

// The bytes of `file` a download would keep from its part (what open_resumable_part would
// find), without opening or changing anything: 0 when there is no usable part.
std::uint64_t resumable_bytes(const StagedFile& staged, const FileToFetch& file);

// Sorted, with overlapping or touching ranges merged and empty ones dropped.
std::vector<ByteRange> merged_ranges(std::vector<ByteRange> ranges);

// True when `file` should be (or already is being) fetched in ranges.
bool wants_ranges(const DownloadPolicy& policy, const FileToFetch& file, const StagedFile& staged);

enum class RangedOutcome {
  verified,        // the file is verified and published at its repo path
  hash_mismatch,   // every byte arrived, the checksum did not match; the part and sidecar are gone
  ranges_refused,  // the server answered 200 to a Range request; part and sidecar are gone
};

// Throws HubError, DownloadError or DownloadCancelled like FileDownloader::fetch; the part and
// its sidecar stay for resume.
RangedOutcome fetch_in_ranges(const HubClient& hub, const DownloadPolicy& policy,
                              const catalog::ModelId& repo, const std::string& commit,
                              const FileToFetch& file, const StagedFile& staged,
                              const std::stop_token& stop, const DownloadEvents& events,
                              ConnectionBudget* extra_connections, std::string& mismatch_reason);

}  // namespace rbee::provisioner
