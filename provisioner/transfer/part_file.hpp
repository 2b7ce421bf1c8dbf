#pragma once
// What a part file holds between the first byte and the publish (internal), for every way a
// file's bytes arrive (file_downloader.cpp tells which is chosen):
//
// - one connection appends at the end (PartFile): the part is always a contiguous prefix, so a
//   resume rehashes it and asks for `Range: bytes=<size>-`;
// - ranges and Xet terms write out of order (ResumablePart): a sidecar beside the part names the
//   ranges that are on disk, and is only ever extended after the part's data is synced.
//
// A part without a sidecar is a prefix; a sidecar that is not this very file's is distrusted and
// the part starts over. Every write goes through write_at, the one pwrite loop.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <rbee/catalog/directory.hpp>

#include "file_hash.hpp"
#include "rbee/provisioner/file_downloader.hpp"
#include "staging.hpp"

namespace rbee::provisioner {

// Writes all of [data, data + length) at `offset` of `fd` (short writes and EINTR continue).
// Throws DownloadError (disk) naming `path`.
void write_at(int fd, const std::filesystem::path& path, const char* data, std::size_t length,
              std::uint64_t offset);

// Sorted, with overlapping or touching ranges merged and empty ones dropped.
std::vector<ByteRange> merged_ranges(std::vector<ByteRange> ranges);

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

// Starts the kernel's writeback of a part's bytes as they are written, without waiting for it
// (sync_file_range WRITE), so the fsync before the publish finds little left to write: the
// durability promised in DESIGN §12 is paid while the network is busy, not after its last byte.
// One per run of bytes written in order (a single connection's part, one range request). Not
// thread-safe: the thread that writes the run owns it.
class Writeback {
 public:
  explicit Writeback(std::uint64_t from = 0) : started_(from), from_(from) {}
  // Bytes up to `end` are written: starts writing back those not started yet, in steps of
  // kStep (a call per few bytes would cost more than it saves).
  void advance(int fd, std::uint64_t end) {
    if (end >= started_ + kStep) start(fd, end);
  }
  // The run ended at `end`: starts what is left, however little.
  void finish(int fd, std::uint64_t end) {
    if (end > started_) start(fd, end);
  }
  void reset() { started_ = from_; }
  std::uint64_t started() const { return started_ - from_; }  // bytes started so far

 private:
  void start(int fd, std::uint64_t end);
  static constexpr std::uint64_t kStep = 8 << 20;
  std::uint64_t started_;
  std::uint64_t from_;
};

// When a file's download began, for DownloadEvents::finished (FileTimeline).
class TimelineClock {
 public:
  void received() { timeline_.received = since_start(); }
  void hashed() { timeline_.hashed = since_start(); }
  // The file is published; tells the caller's `finished` event.
  void durable(const DownloadEvents& events, std::uint64_t written_back);

 private:
  std::chrono::milliseconds since_start() const;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  FileTimeline timeline_;
};

// The part of a single-connection download: written at its end, with every byte fed through
// the file's hash on the way (a resumed prefix is rehashed first). Not thread-safe.
class PartFile {
 public:
  PartFile(const StagedFile& staged, std::uint64_t expected_size, FileHash& hash);
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;

  std::uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }

  void append(const char* data, std::size_t length);
  void restart();  // empties the part and the hash

  // The checksum of everything appended so far (ends this hash run).
  std::string digest();

  // The verified file appears as its blob whole or not at all.
  void publish() { staged_.publish(fd_.get()); }
  std::uint64_t written_back() const { return writeback_.started(); }

 private:
  void rehash_prefix(std::uint64_t expected_size);

  const StagedFile& staged_;
  std::filesystem::path path_;
  FileHash& hash_;
  catalog::UniqueFd fd_;
  std::uint64_t size_ = 0;
  Writeback writeback_;
  std::optional<HashPipeline> pipeline_;  // last: destroyed (joined) first
};

}  // namespace rbee::provisioner
