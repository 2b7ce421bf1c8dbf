#pragma once
// The Hub's repo listing (GET /api/models/{repo}/revision/{rev}?blobs=true), read as untrusted
// input (DESIGN §12): streamed through a SAX parser, so memory follows the entries kept, not
// the size of the JSON; every field checked; limits on entries and bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rbee::provisioner {

struct Sibling {
  std::string path;  // rfilename
  std::uint64_t size = 0;
  std::string blob_id;     // git blob sha1
  std::string lfs_sha256;  // empty for regular (non-LFS) files
};

struct RepoInfo {
  std::string commit;
  std::vector<Sibling> siblings;
  bool gated = false;                  // "gated": "auto" or "manual" (access must be granted)
  bool private_repo = false;           // "private": true
  std::vector<std::string> revisions;  // only in the hive's own snapshot (repo_snapshot.hpp)
};

struct ListingLimits {
  std::size_t max_entries = 250000;          // siblings in one listing
  std::size_t max_bytes = 64 * 1024 * 1024;  // of the listing's JSON, after any decompression
};

// Larger than any file or repo the Hub stores (its upload limit is 500 GB a file), small
// enough that no sum of sizes can overflow.
inline constexpr std::uint64_t kMaxFileBytes = 1ULL << 44;  // 16 TiB
inline constexpr std::uint64_t kMaxRepoBytes = 1ULL << 50;  // 1 PiB

// Parses and validates a listing: an object with "sha" (a string) and "siblings" (an array of
// objects with a non-empty "rfilename", "size" a non-negative integer up to kMaxFileBytes, and
// optional "blobId" and "lfs":{"sha256","size"}), optional "gated" and "private"; no path twice; at
// most max_entries; sizes adding up to at most kMaxRepoBytes. Unknown fields are skipped. Throws
// HubError (protocol) with a message that says what was wrong, never one that echoes the input.
RepoInfo parse_listing(std::string_view json, const ListingLimits& limits);

}  // namespace rbee::provisioner
