#pragma once
// The Hugging Face cache layout of one model folder (DESIGN §16), through its descriptor:
//
//   blobs/<name>                   one file per content: sha256 hex (LFS) or git blob sha1
//   snapshots/<commit>/<path>      relative symlinks to ../../blobs/<name> (one ../ per folder)
//   refs/<ref>                     the 40-hex commit the ref names, no newline
//
// The links are the hive's only symlinks, and the only ones it reads: a link's text is read with
// readlinkat and must be (../)+blobs/<hex> of this folder, a blob is opened by name under blobs/
// with O_NOFOLLOW. Anything else at those names is an error, never followed (DESIGN §12).

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "rbee/catalog/directory.hpp"

namespace rbee::catalog {

inline constexpr std::string_view kBlobsFolder = "blobs";
inline constexpr std::string_view kSnapshotsFolder = "snapshots";
inline constexpr std::string_view kRefsFolder = "refs";

// 40 (git sha1) or 64 (sha256) lowercase hex digits: the names a blob can have.
bool is_blob_name(std::string_view name);
// 40 lowercase hex digits: a commit id.
bool is_commit_id(std::string_view text);

// The text of the link snapshots/<commit>/<repo_path> → blobs/<blob>: "../../blobs/<blob>" for
// a file at the top, one "../" more per folder of `repo_path`.
std::string snapshot_link_text(std::string_view repo_path, std::string_view blob);

// Makes snapshots/<commit>/<repo_path> the link to blobs/<blob> (replacing what is there
// atomically: a temp link renamed over it). Folders on the way are created; fsyncs the folder
// that holds the link.
void link_snapshot_file(const Directory& model, std::string_view commit, std::string_view repo_path,
                        std::string_view blob);

// The blob a snapshot link names; nullopt when there is no link. Throws FileSystemError when
// something else is there (a file, a link to anywhere but this folder's blobs/).
std::optional<std::string> read_snapshot_link(const Directory& model, std::string_view commit,
                                              std::string_view repo_path);

// refs/<ref> (a ref with '/', refs/pr/1, nests folders) replaced atomically and durably with
// `commit` (temp file in `scratch`, fsync, rename, fsync of the folder).
void write_ref(const Directory& model, std::string_view ref, std::string_view commit,
               const Directory& scratch);
// The commit refs/<ref> names; nullopt when there is none or it holds no commit id.
std::optional<std::string> read_ref(const Directory& model, std::string_view ref);
void remove_ref(const Directory& model, std::string_view ref);

// Removes snapshots/<commit> with its links (never what they point to).
void remove_snapshot(const Directory& model, std::string_view commit);

// The blobs some snapshot links, whoever made the link (the hive, huggingface_hub, llama.cpp):
// the last path segment of every link under snapshots/. Links are read, never followed.
std::set<std::string> linked_blobs(const Directory& model);

// Removes each of `candidates` (blob names) that no snapshot links now; returns the bytes freed.
// Only the candidates: a blob another tool wrote and has not linked yet is never touched.
std::uint64_t remove_blobs_unless_linked(const Directory& model,
                                         const std::set<std::string>& candidates);

// An open blob by name (O_NOFOLLOW, a regular file only); an empty UniqueFd when missing.
UniqueFd open_blob(const Directory& model, std::string_view blob);

}  // namespace rbee::catalog
