#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace rbee::catalog {

enum class CatalogErrorCode {
  invalid_model_id,  // not a valid "org/name"
  invalid_path,      // a file path that could escape or clash inside the model directory
  invalid_revision,  // not a branch, tag, refs/pr/N or commit the Hub could name
  not_found,         // no entry for that model
  io_error,          // the disk refused (full, read-only, permissions)
  cancelled,         // a wait for another writer's lock was cancelled
};

std::string_view to_string(CatalogErrorCode code);

class CatalogError : public std::runtime_error {
 public:
  CatalogError(CatalogErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  CatalogErrorCode code() const { return code_; }

 private:
  CatalogErrorCode code_;
};

}  // namespace rbee::catalog
