#include "rbee/provisioner/live_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

namespace rbee::provisioner {
namespace {

constexpr auto kKeepVerified = std::chrono::minutes(1);
constexpr std::size_t kMaxVerified = 256;

}  // namespace

LiveFile::LiveFile(std::uint64_t size, catalog::UniqueFd part, dev_t device, ino_t inode)
    : size_(size), part_(std::move(part)), device_(device), inode_(inode) {}

LiveFile::Progress LiveFile::progress() const {
  std::lock_guard lock(mutex_);
  return progress_;
}

std::uint64_t LiveFile::readable_from(std::uint64_t offset) const {
  if (progress_.state == State::verified) return size_;
  if (progress_.state == State::abandoned) return 0;
  std::uint64_t end = progress_.committed > offset ? progress_.committed : 0;
  for (const auto& range : written_) {
    if (range.begin <= std::max(offset, end) && range.end > std::max(offset, end)) end = range.end;
  }
  return std::min(end, size_ - std::min<std::uint64_t>(size_, 1));  // never the last byte
}

LiveFile::Progress LiveFile::wait_readable(std::uint64_t offset,
                                           std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] {
    return progress_.state != State::growing || readable_from(offset) > offset;
  });
  Progress progress = progress_;
  progress.readable = readable_from(offset);
  return progress;
}

void LiveFile::update(State state, std::uint64_t committed, std::string reason) {
  {
    std::lock_guard lock(mutex_);
    if (progress_.state != State::growing) return;  // verified and abandoned are final
    progress_.state = state;
    progress_.committed = std::max(progress_.committed, committed);
    progress_.reason = std::move(reason);
    progress_.readable = readable_from(0);
  }
  changed_.notify_all();
}

void LiveFile::set_written(std::vector<ByteRange> written) {
  {
    std::lock_guard lock(mutex_);
    written_ = std::move(written);
  }
  changed_.notify_all();
}

std::shared_ptr<LiveFile> LiveFiles::current(const LiveFileKey& key, std::uint64_t size,
                                             int part_fd, std::uint64_t prefix) {
  struct stat info {};
  if (::fstat(part_fd, &info) != 0) return nullptr;  // nothing a reader could use
  auto found = files_.find(key);
  if (found != files_.end()) {
    auto& file = found->second.file;
    const auto progress = file->progress();
    const bool same_part = file->device_ == info.st_dev && file->inode_ == info.st_ino;
    if (progress.state == LiveFile::State::growing && same_part && prefix >= progress.committed &&
        file->size() == size) {
      return file;
    }
    file->update(LiveFile::State::abandoned, progress.committed, "the download started over");
    files_.erase(found);
  }
  catalog::UniqueFd reader(::fcntl(part_fd, F_DUPFD_CLOEXEC, 0));
  if (!reader) return nullptr;  // out of descriptors: readers wait for the verified file
  auto file = std::make_shared<LiveFile>(size, std::move(reader), info.st_dev, info.st_ino);
  files_.emplace(key, Entry{file});
  return file;
}

void LiveFiles::committed(const LiveFileKey& key, std::uint64_t size, int part_fd,
                          std::uint64_t prefix) {
  std::lock_guard lock(mutex_);
  if (auto file = current(key, size, part_fd, prefix)) {
    file->update(LiveFile::State::growing, prefix);
  }
}

void LiveFiles::ranges_written(const LiveFileKey& key, std::uint64_t size, int part_fd,
                               const std::vector<ByteRange>& written) {
  std::lock_guard lock(mutex_);
  const auto found = files_.find(key);
  const std::uint64_t prefix = found == files_.end() ? 0 : found->second.file->progress().committed;
  if (auto file = current(key, size, part_fd, prefix)) file->set_written(written);
}

void LiveFiles::verified(const LiveFileKey& key) {
  std::lock_guard lock(mutex_);
  auto found = files_.find(key);
  if (found == files_.end()) return;
  auto& file = found->second.file;
  file->update(LiveFile::State::verified, file->size());
  verified_.push_back({std::chrono::steady_clock::now(), file, key});
  forget_old_verified();
}

void LiveFiles::forget_verified(const std::string& model) {
  std::lock_guard lock(mutex_);
  erase_verified_if([&](const Verified& verified) { return verified.key.model == model; });
}

void LiveFiles::forget_model(const std::string& model) {
  std::lock_guard lock(mutex_);
  for (auto it = files_.begin(); it != files_.end();) {
    if (it->first.model != model) {
      ++it;
      continue;
    }
    const auto progress = it->second.file->progress();
    it->second.file->update(LiveFile::State::abandoned, progress.committed,
                            "the model was deleted");
    it = files_.erase(it);
  }
  std::erase_if(verified_, [&](const Verified& v) { return v.key.model == model; });
}

void LiveFiles::abandoned(const LiveFileKey& key, const std::string& reason) {
  std::lock_guard lock(mutex_);
  auto found = files_.find(key);
  if (found == files_.end()) return;
  const auto progress = found->second.file->progress();
  if (progress.state == LiveFile::State::verified) return;  // a later failure: the file stands
  found->second.file->update(LiveFile::State::abandoned, progress.committed, reason);
  files_.erase(found);
}

std::shared_ptr<const LiveFile> LiveFiles::find(const LiveFileKey& key) const {
  std::lock_guard lock(mutex_);
  forget_old_verified();
  const auto found = files_.find(key);
  return found == files_.end() ? nullptr : found->second.file;
}

std::size_t LiveFiles::size() const {
  std::lock_guard lock(mutex_);
  forget_old_verified();
  return files_.size();
}

void LiveFiles::forget_old_verified() const {
  const auto now = std::chrono::steady_clock::now();
  std::size_t expired = 0;
  while (expired < verified_.size() && now - verified_[expired].at > kKeepVerified) ++expired;
  const std::size_t excess = verified_.size() > kMaxVerified ? verified_.size() - kMaxVerified : 0;
  const std::size_t dropped = std::max(excess, expired);
  if (dropped == 0) return;
  std::size_t index = 0;
  erase_verified_if([&](const Verified&) { return index++ < dropped; });
}

void LiveFiles::erase_verified_if(const std::function<bool(const Verified&)>& drop) const {
  std::erase_if(verified_, [&](const Verified& verified) {
    if (!drop(verified)) return false;
    if (const auto found = files_.find(verified.key);
        found != files_.end() && found->second.file == verified.file) {
      files_.erase(found);
    }
    return true;
  });
}

}  // namespace rbee::provisioner
