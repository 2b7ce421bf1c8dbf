#include <doctest/doctest.h>
#include <rbee/hive/model_operations.hpp>

#include "support/temp_dir.hpp"

using namespace rbee;
using namespace std::chrono_literals;

namespace {

provisioner::HubSettings unreachable_hub() {
  provisioner::HubSettings settings;
  settings.endpoint = "http://127.0.0.1:9";  // discard port: nothing listens
  return settings;
}

struct Fixture {
  testing::TempDir root;
  narration::Narrator narrator;
  jobs::JobRegistry registry;
  catalog::ModelCatalog catalog{root.path()};
  provisioner::ModelProvisioner provisioner{
      provisioner::HubClient(unreachable_hub()), catalog, narrator, {}};
  jobs::JobRouter router{narrator, 2};
  Fixture() {
    narrator.add_sink(jobs::make_job_event_sink(registry));
    hive::register_model_operations(router, catalog, registry, provisioner);
  }
  std::string run(jobs::Operation operation) {
    auto job = registry.create(std::move(operation));
    router.submit(job);
    for (std::uint64_t seen = 0;;) {
      auto batch = job->events().read_after(seen, 10s);
      seen += batch.entries.size();
      if (batch.finished) return batch.entries.back().data;
    }
  }
  void seed(const std::string& id) {
    catalog::ModelEntry entry;
    entry.id = catalog::parse_model_id(id);
    entry.status = catalog::ModelStatus::ready;
    catalog.put(entry);
  }
};

}  // namespace

TEST_CASE("model_delete refuses while a download of that model is unfinished") {
  Fixture f;
  f.seed("org/busy");
  auto download =
      f.registry.create(jobs::ModelDownload{"h", "org/busy:model.gguf", "main", {}, {}});
  download->start();  // as the provisioner's runner would have
  const std::string terminal = f.run(jobs::ModelDelete{"h", "org/busy"});
  CHECK(terminal.find("is being downloaded by " + download->id()) != std::string::npos);
  CHECK(f.catalog.get(catalog::parse_model_id("org/busy")));

  download->fail("gone");
  CHECK(f.run(jobs::ModelDelete{"h", "org/busy"}) == "[DONE]");
  CHECK_FALSE(f.catalog.get(catalog::parse_model_id("org/busy")));
}

TEST_CASE("operations are validated before a job exists") {
  CHECK_NOTHROW(
      hive::validate_operation(jobs::ModelDownload{"h", "org/n:dir/f.gguf", "refs/pr/1", {}, {}}));
  CHECK_THROWS_AS(hive::validate_operation(jobs::ModelDownload{"h", "org/n:../f", "main", {}, {}}),
                  catalog::CatalogError);
  CHECK_THROWS_AS(hive::validate_operation(jobs::ModelGet{"h", "a/b/c"}), catalog::CatalogError);
  CHECK_THROWS_AS(hive::validate_operation(
                      jobs::ModelDownload{"h", "org/n", "main", {std::string(2000, '*')}, {}}),
                  jobs::OperationError);
}
