#pragma once
// The Hub's answers, as its clients parse them (internal): model info, tree and paths-info
// entries, errors, and the revision/path split of a URL.

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <rbee/provisioner/repo_snapshot.hpp>

namespace rbee::mirror {

// The Hub's error shape: the status, X-Error-Code (empty: none) and X-Error-Message headers,
// and {"error": message}. The message is sanitised; nothing of the request is echoed raw.
void send_hub_error(httplib::Response& response, int status, std::string_view error_code,
                    std::string_view message);

// The answer for a pull that failed with the provisioner's error kind `kind`.
void send_pull_failure(httplib::Response& response, const std::string& kind,
                       const std::string& message);

void send_json(httplib::Response& response, const nlohmann::json& body);

// GET /api/models/{repo}[/revision/{rev}]: with `blobs`, each sibling has size, blobId, lfs.
nlohmann::json model_info_json(const std::string& repo, const provisioner::RepoSnapshot& snapshot,
                               bool blobs);

// One entry of the tree and paths-info answers.
nlohmann::json file_entry_json(const provisioner::Sibling& sibling);
nlohmann::json directory_entry_json(const std::string& path);

// "{rev}/{path}" of a resolve or tree URL: the revision is its first segment, or three for
// "refs/pr/N" and "refs/convert/X" (clients encode its slashes, and the server's URL decoding
// turns them back into slashes). nullopt when there is no revision at all.
std::optional<std::pair<std::string, std::string>> split_revision(std::string_view rest);

// The quoted ETag the Hub sends for a file: its sha256 (LFS), else its git blob id.
std::string etag_of(const provisioner::Sibling& sibling);

}  // namespace rbee::mirror
