#pragma once
// ChunkIndex (internal): which xorb chunks sit where on this machine's disk, so a Xet download
// copies a chunk range it already has instead of fetching it (DESIGN §15, "Reuse").
//
// For every file written through Xet, a record in the model's working folder says which chunk
// ranges of which xorbs landed at which offsets (and each chunk's length, so any sub-range can
// be found):
//
//   <model>/.rbee/xet-chunks/<digest of the blob path>.json
//
// A record is outside input once on disk (a crash, a shared cache): it is read bounded and
// checked, and a source is used only while the file at its path still has the size and
// modification time the record saw. Whatever it says, the copied bytes are verified with the
// file's SHA-256 like fetched ones.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <rbee/catalog/directory.hpp>

#include "xet/xet_format.hpp"

namespace rbee::provisioner::xet {

// Chunks `chunks` of `xorb` at `offset` in a file; `chunk_lengths` holds each chunk's decoded
// length, or is empty when only the whole span's `length` is known (a term resumed from disk).
struct ChunkSpan {
  std::string xorb;
  ChunkRange chunks;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::vector<std::uint32_t> chunk_lengths;
};

// Where a chunk range can be read from: bytes [offset, offset + length) of the file
// `repo_path` of the model in `model_dir` (opened without following symlinks).
struct ReuseSource {
  std::filesystem::path model_dir;
  std::string repo_path;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t file_size = 0;
  std::int64_t mtime_ns = 0;                 // the source is stale when the file's differs
  std::vector<std::uint32_t> chunk_lengths;  // of the chunks read, when the record knows them
};

class ChunkIndex {
 public:
  // `models_root`: the catalog's root (<root>/models--<org>--<name>/ are the models).
  explicit ChunkIndex(std::filesystem::path models_root);

  // A file on disk that holds exactly chunks `chunks` of `xorb`, still as recorded.
  std::optional<ReuseSource> find(const std::string& xorb, const ChunkRange& chunks);

  // Records the verified file `repo_path` of `model` (open as `fd`, published) with its spans,
  // replacing the record of an earlier revision at that path. Best effort: a record that cannot
  // be written only costs a later download its reuse, so errors are returned, not thrown.
  std::optional<std::string> record(const catalog::Directory& model, const std::string& repo_path,
                                    int fd, std::vector<ChunkSpan> spans);

 private:
  struct Record {
    std::filesystem::path model_dir;
    std::string repo_path;
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::vector<ChunkSpan> spans;
  };
  void load_locked();
  void load_model_records(const std::filesystem::path& model_dir);
  void add_locked(std::shared_ptr<const Record> record);

  const std::filesystem::path root_;
  std::mutex mutex_;
  bool loaded_ = false;
  std::map<std::filesystem::path, std::shared_ptr<const Record>> by_file_;  // model_dir/repo_path
  // xorb → the records holding some of its chunks (stale ones are skipped at lookup).
  std::multimap<std::string, std::shared_ptr<const Record>> by_xorb_;
};

}  // namespace rbee::provisioner::xet
