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

#include "part_file.hpp"
#include "rbee/provisioner/file_downloader.hpp"
#include "staging.hpp"

namespace rbee::provisioner {

// True when `file` should be (or already is being) fetched in ranges.
bool wants_ranges(const DownloadPolicy& policy, const FileToFetch& file, const StagedFile& staged);

enum class RangedOutcome {
  verified,        // the file is verified and published as its blob
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
