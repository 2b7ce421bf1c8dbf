#pragma once
// The JSON shapes of the hive's HTTP API and data events (README "API").

#include <string_view>

#include <nlohmann/json.hpp>
#include <rbee/catalog/model_entry.hpp>
#include <rbee/jobs/job.hpp>

namespace rbee::hive {

nlohmann::json to_json(const catalog::ModelEntry& entry);
// {"job_id","operation","state","created_at_ms","started_at_ms","finished_at_ms","error",
//  "request","sse_url","events"}
nlohmann::json to_json(const jobs::Job& job);
// {"error":{"code":…,"message":…}}
nlohmann::json error_body(std::string_view code, std::string_view message);

std::string sse_url(const std::string& job_id);

}  // namespace rbee::hive
