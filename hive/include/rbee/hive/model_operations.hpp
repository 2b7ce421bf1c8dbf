#pragma once
// The job handlers of the model operations: model_list, model_get, model_delete, and
// model_download until the provisioner fills it in.

#include <rbee/catalog/model_catalog.hpp>
#include <rbee/jobs/job_registry.hpp>
#include <rbee/jobs/job_router.hpp>
#include <rbee/provisioner/model_provisioner.hpp>

namespace rbee::hive {

// Checks what parse_operation leaves to the hive: model ids, repo paths and revisions. Throws
// catalog::CatalogError or jobs::OperationError (both mean 400).
void validate_operation(const jobs::Operation& operation);

// The catalog, registry and provisioner must outlive the router.
void register_model_operations(jobs::JobRouter& router, catalog::ModelCatalog& catalog,
                               const jobs::JobRegistry& registry,
                               provisioner::ModelProvisioner& provisioner);

}  // namespace rbee::hive
