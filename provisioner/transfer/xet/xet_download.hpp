#pragma once
// Xet downloads (internal): one file from the Hub's chunk store instead of its resolve bridge
// (DESIGN §15). The story, in xet_download.cpp:
//
//  1. A read token from the Hub (XetTokens), then the file's reconstruction from the CAS: v2,
//     or v1 where the CAS does not know v2. The token goes to the CAS only.
//  2. The terms (chunk ranges of xorbs, in file order) become byte ranges of the part file.
//     Terms already on disk are skipped: the part's sidecar (the ranged downloads' format, so
//     either path resumes the other's part) lists the committed ones.
//  3. Terms some file on this machine already holds are copied from it (ChunkIndex), by a
//     thread of their own (copy_file_range: in the kernel, a reflink where the file system
//     shares extents), while
//  4. the rest is fetched: one GET per presigned fetch (several ranges in one Range header,
//     multipart answers), over parallel connections, each chunk decoded and written at its
//     term's offset. A 403 means the URLs expired: the reconstruction is asked again.
//  5. The caller's thread hashes the contiguous prefix as terms are copied or fetched (one
//     pass, so the new file is hashed as it is assembled, never read again afterwards), starts
//     its writeback, persists the committed terms every second, and publishes the verified
//     file; its chunk ranges are then recorded for the next download to reuse.

#include <map>
#include <mutex>
#include <stop_token>
#include <string>

#include "rbee/provisioner/file_downloader.hpp"
#include "staging.hpp"
#include "xet/chunk_index.hpp"

namespace rbee::provisioner::xet {

// Xet read tokens, one per repo and revision, shared by a downloader's files: fetched on first
// use, again a minute before they expire, and whenever the CAS refused one (401).
class XetTokens {
 public:
  explicit XetTokens(const HubClient& hub) : hub_(hub) {}
  // Throws HubError. `refused`: a token the CAS answered 401 to; a fresh one replaces it.
  XetAccess get(const catalog::ModelId& repo, const std::string& revision,
                const std::stop_token& stop, const std::string& refused = "");

 private:
  const HubClient& hub_;
  std::mutex mutex_;
  std::map<std::string, XetAccess> by_repo_;
};

enum class XetOutcome {
  verified,         // published as its blob, and recorded in the chunk index
  hash_mismatch,    // every term arrived, the checksum did not match: part and sidecar are gone
  cas_unreachable,  // no token or no CAS: nothing was changed, the bridge may serve the file
};

struct XetFile {
  const FileToFetch& file;
  std::string xet_hash;
};

// Throws HubError (after retries), DownloadError or DownloadCancelled like FileDownloader;
// the part and its sidecar stay for resume. `reuse` may be null (no copying from disk).
// `reason` says why for hash_mismatch and cas_unreachable.
XetOutcome fetch_with_xet(const HubClient& hub, XetTokens& tokens, ChunkIndex* reuse,
                          const DownloadPolicy& policy, const catalog::ModelId& repo,
                          const std::string& commit, const XetFile& file,
                          const catalog::Directory& model, const StagedFile& staged,
                          const std::stop_token& stop, const DownloadEvents& events,
                          ConnectionBudget* extra_connections, std::string& reason);

}  // namespace rbee::provisioner::xet
