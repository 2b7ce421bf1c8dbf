#include "rbee/catalog/model_catalog.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "rbee/catalog/file_lock.hpp"

namespace fs = std::filesystem;

namespace rbee::catalog {
namespace {

constexpr const char* kMetadataFile = "metadata.yaml";
constexpr const char* kLockFolder = ".locks";

std::int64_t now_unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

[[noreturn]] void throw_io(std::string_view what, const fs::path& path, int error) {
  throw CatalogError(CatalogErrorCode::io_error,
                     fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(error)));
}

void write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_io("write", path, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(written));
  }
}

void fsync_folder(const fs::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_io("open folder", folder, errno);
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0) throw_io("fsync folder", folder, error);
}

// Temp file, fsync, rename over the target, fsync the folder: after a crash the target is the
// old or the new document, never a mix.
void replace_file_atomically(const fs::path& target, std::string_view content) {
  static std::atomic<unsigned> counter{0};
  const fs::path temp =
      target.parent_path() /
      fmt::format(".{}.{}.{}.tmp", target.filename().string(), ::getpid(), counter++);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw_io("create", temp, errno);
  try {
    write_all(fd, content, temp);
    if (::fsync(fd) != 0) throw_io("fsync", temp, errno);
  } catch (...) {
    ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw_io("close", temp, error);
  }
  if (::rename(temp.c_str(), target.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw_io("rename into", target, error);
  }
  fsync_folder(target.parent_path());
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot open: {}", std::strerror(errno)));
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace

ModelCatalog::ModelCatalog(fs::path root, std::chrono::milliseconds progress_interval)
    : root_(std::move(root)), progress_interval_(progress_interval) {}

fs::path ModelCatalog::model_dir(const ModelId& id) const {
  return root_ / id.org / id.name;
}

fs::path ModelCatalog::metadata_path(const ModelId& id) const {
  return model_dir(id) / kMetadataFile;
}

// Locks live outside the model folder so that remove() can delete the folder while holding one.
fs::path ModelCatalog::lock_path(const ModelId& id) const {
  return root_ / kLockFolder / id.org / (id.name + ".lock");
}

fs::path ModelCatalog::download_lock_path(const ModelId& id) const {
  return root_ / kLockFolder / id.org / (id.name + ".download.lock");
}

ModelEntry ModelCatalog::read_entry(const ModelId& id, const fs::path& file) const {
  try {
    ModelEntry entry = parse_model_entry(read_file(file));
    if (entry.id != id) {
      throw std::runtime_error(
          fmt::format("it names model '{}', not the folder's '{}'", entry.id.str(), id.str()));
    }
    return entry;
  } catch (const std::exception& error) {
    ModelEntry broken;
    broken.id = id;
    broken.path = model_dir(id).string();
    broken.status = ModelStatus::failed;
    broken.error = fmt::format("metadata.yaml is unreadable: {}", error.what());
    return broken;
  }
}

std::vector<ModelEntry> ModelCatalog::list() const {
  std::vector<ModelEntry> entries;
  std::error_code ec;
  for (const auto& org : fs::directory_iterator(root_, ec)) {
    const std::string org_name = org.path().filename().string();
    if (org_name.starts_with('.') || !org.is_directory(ec)) continue;
    for (const auto& model : fs::directory_iterator(org.path(), ec)) {
      const fs::path metadata = model.path() / kMetadataFile;
      if (!model.is_directory(ec) || !fs::exists(metadata, ec)) continue;
      try {
        const ModelId id = parse_model_id(org_name + "/" + model.path().filename().string());
        entries.push_back(read_entry(id, metadata));
      } catch (const CatalogError&) {
        // A folder whose name is no model id was not made by the catalog: not ours to list.
      }
    }
  }
  std::sort(entries.begin(), entries.end(),
            [](const ModelEntry& a, const ModelEntry& b) { return a.id.str() < b.id.str(); });
  return entries;
}

std::optional<ModelEntry> ModelCatalog::get(const ModelId& id) const {
  const fs::path metadata = metadata_path(id);
  std::error_code ec;
  if (!fs::exists(metadata, ec)) return std::nullopt;
  return read_entry(id, metadata);
}

void ModelCatalog::write_entry(ModelEntry& entry) const {
  entry.updated_at_ms = now_unix_ms();
  if (entry.added_at_ms == 0) entry.added_at_ms = entry.updated_at_ms;
  if (entry.path.empty()) entry.path = model_dir(entry.id).string();
  std::error_code ec;
  fs::create_directories(model_dir(entry.id), ec);
  if (ec) throw_io("create folder", model_dir(entry.id), ec.value());
  replace_file_atomically(metadata_path(entry.id), to_yaml(entry));
}

void ModelCatalog::put(ModelEntry entry, std::stop_token stop) {
  FileLock lock(lock_path(entry.id), std::move(stop));
  write_entry(entry);
}

ModelEntry ModelCatalog::update(const ModelId& id, const std::function<void(ModelEntry&)>& change,
                                std::stop_token stop) {
  FileLock lock(lock_path(id), std::move(stop));
  ModelEntry entry = get(id).value_or(ModelEntry{});
  entry.id = id;
  change(entry);
  write_entry(entry);
  return entry;
}

bool ModelCatalog::update_progress(const ModelId& id, std::uint64_t bytes_done,
                                   std::uint64_t bytes_total, std::stop_token stop) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(throttle_mutex_);
    auto [it, first] = last_progress_write_.try_emplace(id.str(), now);
    if (!first && bytes_done != bytes_total && now - it->second < progress_interval_) return false;
    it->second = now;
  }
  update(
      id,
      [&](ModelEntry& entry) {
        entry.status = ModelStatus::downloading;
        entry.bytes_done = bytes_done;
        entry.bytes_total = bytes_total;
        entry.error.clear();
      },
      std::move(stop));
  return true;
}

bool ModelCatalog::remove(const ModelId& id, std::stop_token stop) {
  FileLock lock(lock_path(id), std::move(stop));
  const fs::path folder = model_dir(id);
  std::error_code ec;
  if (!fs::exists(folder, ec)) return false;
  fs::remove_all(folder, ec);
  if (ec) throw_io("remove", folder, ec.value());
  fs::remove(folder.parent_path(), ec);  // only succeeds when the org folder is now empty
  {
    std::lock_guard throttle(throttle_mutex_);
    last_progress_write_.erase(id.str());
  }
  return true;
}

}  // namespace rbee::catalog
