// libFuzzer: the job body of POST /v1/jobs, as the hive reads it (parse, then validate the ids,
// globs and revision the way the API does before a job exists).
#include <nlohmann/json.hpp>
#include <rbee/catalog/model_id.hpp>
#include <rbee/jobs/operation.hpp>
#include <rbee/narration/sanitize.hpp>

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  try {
    const auto operation = rbee::jobs::parse_operation(body);
    (void)rbee::narration::dump_json(rbee::jobs::to_json(operation));
    if (const auto* download = std::get_if<rbee::jobs::ModelDownload>(&operation)) {
      (void)rbee::catalog::parse_model_reference(download->model);
    }
  } catch (const rbee::jobs::OperationError&) {
  } catch (const rbee::catalog::CatalogError&) {
  }
  return 0;
}
