#pragma once
// LiveFiles: the files this process is downloading, readable while they grow.
//
// The mirror (DESIGN §13) streams a file to its requesters while the download commits it: the
// bytes from the first one that are on disk and hashed, in order. A reader holds the part open
// (a duplicate of the download's descriptor), so the rename that publishes the verified file
// changes nothing for it. A download that starts over or fails abandons its LiveFile: readers
// see that and abort, so nobody is ever sent a complete file that did not verify.

#include <chrono>
#include <compare>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <rbee/catalog/directory.hpp>

#include "rbee/provisioner/file_downloader.hpp"

namespace rbee::provisioner {

struct LiveFileKey {
  std::string model;   // "org/name"
  std::string commit;  // the commit the file is downloaded at
  std::string path;    // in the repo
  auto operator<=>(const LiveFileKey&) const = default;
};

class LiveFile {
 public:
  enum class State { growing, verified, abandoned };
  struct Progress {
    State state = State::growing;
    std::uint64_t committed = 0;  // bytes from the start that are on disk and hashed
    // What a reader may be sent (from the offset it asked about, or from the start): everything
    // once verified; until then the bytes on disk but the last byte of the file, so no reader
    // ever holds a complete file that did not verify.
    std::uint64_t readable = 0;
    std::string reason;  // why it was abandoned
  };

  LiveFile(std::uint64_t size, catalog::UniqueFd part, dev_t device, ino_t inode);

  std::uint64_t size() const { return size_; }
  // The part, open for reading; once verified, the same inode is the published file.
  int fd() const { return part_.get(); }
  Progress progress() const;
  // Waits until the byte at `offset` is readable, the state leaves `growing`, or `timeout` has
  // passed; returns the progress then, `readable` being where the readable run from `offset`
  // ends.
  Progress wait_readable(std::uint64_t offset, std::chrono::milliseconds timeout) const;

 private:
  friend class LiveFiles;
  void update(State state, std::uint64_t committed, std::string reason = {});
  void set_written(std::vector<ByteRange> written);
  std::uint64_t readable_from(std::uint64_t offset) const;  // under mutex_

  const std::uint64_t size_;
  const catalog::UniqueFd part_;
  const dev_t device_;
  const ino_t inode_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  Progress progress_;
  std::vector<ByteRange> written_;  // beyond the committed prefix (a ranged download)
};

// Thread-safe. The download side reports; the reading side finds.
class LiveFiles {
 public:
  // The first `prefix` bytes of the file in `part_fd` are committed. A different part (another
  // inode) or a shorter prefix than before means the download started over: the old LiveFile is
  // abandoned and a new one begins.
  void committed(const LiveFileKey& key, std::uint64_t size, int part_fd, std::uint64_t prefix);
  // A ranged download's ranges on disk (see DownloadEvents::ranges_written).
  void ranges_written(const LiveFileKey& key, std::uint64_t size, int part_fd,
                      const std::vector<ByteRange>& written);
  // The file is verified and published. It stays findable until the catalog says so
  // (forget_verified), for a minute at most, the last 256 files at most (each holds a
  // descriptor), so a reader arriving before the catalog says "verified" still finds it.
  void verified(const LiveFileKey& key);
  // The catalog now records the verified files of `model`: readers find them there, so their
  // descriptors are closed here.
  void forget_verified(const std::string& model);
  // The model was deleted: every file of it is dropped at once (a growing one is abandoned,
  // its readers cut off), so no descriptor keeps its disk space and no reader is sent its bytes.
  void forget_model(const std::string& model);
  // The bytes reported so far are not the file's (a checksum mismatch, a failure, a cancel).
  void abandoned(const LiveFileKey& key, const std::string& reason);

  // The growing or just verified file; null when none.
  std::shared_ptr<const LiveFile> find(const LiveFileKey& key) const;
  // Files held now, growing or verified (each holds a descriptor).
  std::size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<LiveFile> file;
  };
  struct Verified {
    std::chrono::steady_clock::time_point at;
    std::shared_ptr<LiveFile> file;
    LiveFileKey key;
  };
  // Drops the verified files older than a minute or beyond the last 256. Every look-up calls
  // it, so a quiet hive closes their descriptors at its next look-up too. Under mutex_.
  void forget_old_verified() const;
  // Drops the verified files `drop` picks (oldest first), each from files_ too unless a new
  // download of the same file has taken its place since. Under mutex_.
  void erase_verified_if(const std::function<bool(const Verified&)>& drop) const;
  // The LiveFile of this download of `key`: the current one, or a new one when there was none
  // or `part_fd` is another part (the download started over). Null when it cannot be read.
  std::shared_ptr<LiveFile> current(const LiveFileKey& key, std::uint64_t size, int part_fd,
                                    std::uint64_t prefix);  // under mutex_

  // Mutable: a const look-up also expires what is due.
  mutable std::mutex mutex_;
  mutable std::map<LiveFileKey, Entry> files_;
  mutable std::deque<Verified> verified_;  // oldest first
};

}  // namespace rbee::provisioner
