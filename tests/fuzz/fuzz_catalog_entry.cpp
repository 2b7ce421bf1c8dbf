// libFuzzer: metadata.yaml as any program (or a damaged disk) may leave it. parse_model_entry
// either throws std::runtime_error or returns an entry whose file paths stay inside the model
// folder and which survives a round trip through to_yaml unchanged.
#include <rbee/catalog/model_entry.hpp>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  rbee::catalog::ModelEntry entry;
  try {
    entry = rbee::catalog::parse_model_entry(text);
  } catch (const std::runtime_error&) {
    return 0;  // refused with a reason: the catalog reports the model as failed
  }
  auto check_paths = [](const std::vector<rbee::catalog::ModelFile>& files) {
    for (const auto& file : files) {
      try {
        rbee::catalog::validate_repo_path(file.path);
      } catch (const rbee::catalog::CatalogError&) {
        std::abort();  // an escaping path was accepted
      }
    }
  };
  check_paths(entry.files);
  for (const auto& revision : entry.revisions) check_paths(revision.files);
  rbee::catalog::ModelEntry again;
  try {
    again = rbee::catalog::parse_model_entry(rbee::catalog::to_yaml(entry));
  } catch (const std::runtime_error&) {
    std::abort();  // the catalog could not read back what it wrote
  }
  if (!(again == entry)) std::abort();
  return 0;
}
