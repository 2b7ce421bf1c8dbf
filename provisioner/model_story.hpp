#pragma once
// What the three files of the model's story share (internal to the provisioner):
//   model_provisioner.cpp  the job: the model's lock, a download slot, the listing (with
//                          fallback Hubs), what a failure or a cancel leaves in the catalog;
//   download_plan.cpp      what to fetch: selection, checks of the Hub's listing, what is on
//                          disk already, disk space, the entry, the completion;
//   model_files.cpp        the files, several at once, through the transfer floor
//                          (FileDownloader), with progress, catalog cadence and failures.

#include <chrono>
#include <cstdint>
#include <filesystem>

#include <rbee/catalog/model_entry.hpp>
#include <rbee/narration/human_units.hpp>
#include <rbee/narration/narrator.hpp>

#include "rbee/provisioner/file_downloader.hpp"
#include "rbee/provisioner/hub_client.hpp"
#include "rbee/provisioner/model_provisioner.hpp"

namespace rbee::provisioner {

namespace fs = std::filesystem;
using catalog::ModelEntry;
using catalog::ModelFile;
using catalog::ModelId;
using catalog::ModelStatus;
using narration::format_bytes;
using narration::format_duration;
using narration::Level;
using Clock = std::chrono::steady_clock;

inline constexpr const char* kActor = "provisioner";  // narration's actor

// Some files of a job failed; /metrics counted each one by its kind already.
class FilesFailed : public ProvisionError {
 public:
  using ProvisionError::ProvisionError;
};

// The catalog's record of a file, as the transfer floor asks for it.
FileToFetch to_fetch(const catalog::ModelFile& file);

// A regular file (not a symlink) of this size at the path.
bool on_disk_with_size(const std::filesystem::path& file, std::uint64_t size);

// Free bytes on the file system that holds `folder` (or its nearest existing ancestor).
std::uint64_t free_bytes(std::filesystem::path folder);

// Gated, unauthorized or forbidden: the Hub will give no file of this model to this token.
bool refuses_access(const HubError& error);

}  // namespace rbee::provisioner
