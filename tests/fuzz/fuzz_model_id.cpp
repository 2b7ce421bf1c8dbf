// libFuzzer: model ids, "org/name:file" references and repo file paths. Whatever is accepted
// must stay inside a model folder: no "..", no absolute path, no empty part.
#include <rbee/catalog/model_id.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

void require_contained(std::string_view path) {
  if (path.empty() || path.front() == '/' || path.find('\0') != std::string_view::npos)
    std::abort();
  for (std::size_t start = 0; start <= path.size();) {
    const auto end = std::min(path.find('/', start), path.size());
    const auto part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") std::abort();
    start = end + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    require_contained(rbee::catalog::parse_model_id(text).str());
  } catch (const rbee::catalog::CatalogError&) {
  }
  try {
    const auto reference = rbee::catalog::parse_model_reference(text);
    require_contained(reference.id.str());
    if (reference.file) require_contained(*reference.file);
  } catch (const rbee::catalog::CatalogError&) {
  }
  try {
    rbee::catalog::validate_repo_path(text);
    require_contained(text);
  } catch (const rbee::catalog::CatalogError&) {
  }
  return 0;
}
