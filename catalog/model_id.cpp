#include "rbee/catalog/model_id.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace rbee::catalog {
namespace {

bool is_printable(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

// Quotes the input in messages only when that cannot flood or garble a log line.
std::string describe(std::string_view text) {
  if (text.size() <= 120 && is_printable(text)) return fmt::format("'{}'", text);
  return fmt::format("of {} bytes", text.size());
}

[[noreturn]] void invalid_id(std::string_view text, std::string_view why) {
  throw CatalogError(CatalogErrorCode::invalid_model_id,
                     fmt::format("invalid model id {}: {}", describe(text), why));
}

[[noreturn]] void invalid_path(std::string_view path, std::string_view why) {
  throw CatalogError(CatalogErrorCode::invalid_path,
                     fmt::format("invalid file path {}: {}", describe(path), why));
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

void validate_id_part(std::string_view whole, std::string_view part, std::string_view role) {
  if (part.empty()) invalid_id(whole, fmt::format("the {} part is empty", role));
  if (!is_alnum(part.front())) {
    invalid_id(whole, fmt::format("the {} part must start with a letter or digit", role));
  }
  for (char c : part) {
    if (!is_alnum(c) && c != '.' && c != '_' && c != '-') {
      invalid_id(whole,
                 fmt::format("the {} part may only hold letters, digits, '.', '_' and '-'", role));
    }
  }
  if (part.find("--") != std::string_view::npos || part.find("..") != std::string_view::npos) {
    invalid_id(whole, "'--' and '..' are not allowed");
  }
  if (part.back() == '-' || part.back() == '.') {
    invalid_id(whole, fmt::format("the {} part must not end with '-' or '.'", role));
  }
}

}  // namespace

std::string_view to_string(CatalogErrorCode code) {
  switch (code) {
    case CatalogErrorCode::invalid_model_id:
      return "invalid_model_id";
    case CatalogErrorCode::invalid_path:
      return "invalid_path";
    case CatalogErrorCode::invalid_revision:
      return "invalid_revision";
    case CatalogErrorCode::not_found:
      return "model_not_found";
    case CatalogErrorCode::io_error:
      return "io_error";
    case CatalogErrorCode::cancelled:
      return "cancelled";
  }
  return "catalog_error";
}

ModelId parse_model_id(std::string_view text) {
  if (text.empty()) invalid_id(text, "it is empty");
  if (text.size() > kMaxModelIdLength) {
    invalid_id(text, fmt::format("longer than {} characters", kMaxModelIdLength));
  }
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) {  // a canonical model without an owner: "gpt2"
    validate_id_part(text, text, "name");
    return ModelId{"", std::string(text)};
  }
  if (text.find('/', slash + 1) != std::string_view::npos) {
    invalid_id(text, "expected 'org/name' or a name without an owner, with at most one '/'");
  }
  const auto org = text.substr(0, slash);
  const auto name = text.substr(slash + 1);
  validate_id_part(text, org, "organisation");
  validate_id_part(text, name, "name");
  return ModelId{std::string(org), std::string(name)};
}

ModelId model_id_of_folder(std::string_view folder) {
  if (!folder.starts_with(kRepoFolderPrefix)) invalid_id(folder, "not a model folder");
  const auto rest = folder.substr(kRepoFolderPrefix.size());
  const auto separator = rest.find("--");
  if (separator == std::string_view::npos) return parse_model_id(rest);
  const ModelId id = parse_model_id(std::string(rest.substr(0, separator)) + "/" +
                                    std::string(rest.substr(separator + 2)));
  if (id.folder() != folder) invalid_id(folder, "not a model folder");
  return id;
}

ModelId model_id_of_schema1_folder(std::string_view org_folder, std::string_view name) {
  if (org_folder == kSchema1NoOwnerFolder) return parse_model_id(name);
  if (name.find('/') != std::string_view::npos) invalid_id(name, "not a folder name");
  return parse_model_id(std::string(org_folder) + "/" + std::string(name));
}

ModelReference parse_model_reference(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return {parse_model_id(text), std::nullopt};
  std::string file(text.substr(colon + 1));
  ModelReference reference{parse_model_id(text.substr(0, colon)), file};
  validate_repo_path(file);
  return reference;
}

void validate_repo_path(std::string_view path) {
  if (path.empty()) invalid_path(path, "it is empty");
  if (path.size() > kMaxRepoPathLength) {
    invalid_path(path, fmt::format("longer than {} characters", kMaxRepoPathLength));
  }
  if (!is_printable(path)) invalid_path(path, "it contains control characters");
  if (path.front() == '/') invalid_path(path, "absolute paths are not allowed");
  if (path.find('\\') != std::string_view::npos) invalid_path(path, "backslashes are not allowed");

  std::size_t start = 0;
  while (start <= path.size()) {
    const auto end = std::min(path.find('/', start), path.size());
    const auto segment = path.substr(start, end - start);
    if (segment.empty()) invalid_path(path, "empty path segments are not allowed");
    if (segment == "." || segment == "..")
      invalid_path(path, "'.' and '..' segments are not allowed");
    start = end + 1;
  }
  const auto top = path.substr(0, path.find('/'));
  if (top == "metadata.yaml" || top == ".rbee") {
    invalid_path(path, "'metadata.yaml' and '.rbee' at the top of a model are the hive's own");
  }
}

void validate_revision(std::string_view revision) {
  const auto refuse = [&](std::string_view why) {
    throw CatalogError(CatalogErrorCode::invalid_revision,
                       fmt::format("invalid revision {}: {}", describe(revision), why));
  };
  if (revision.empty()) refuse("it is empty");
  if (revision.size() > kMaxRevisionLength) {
    refuse(fmt::format("longer than {} characters", kMaxRevisionLength));
  }
  const bool plain = std::all_of(revision.begin(), revision.end(), [](char c) {
    return c > 0x20 && c < 0x7f && std::string_view("~^:?*[\\").find(c) == std::string_view::npos;
  });
  if (!plain) refuse("only printable ASCII without spaces or any of ~^:?*[\\ is allowed");
  if (revision.find("..") != std::string_view::npos ||
      revision.find("//") != std::string_view::npos ||
      revision.find("@{") != std::string_view::npos) {
    refuse("'..', '//' and '@{' are not allowed");
  }
  if (revision.front() == '/' || revision.back() == '/' || revision.back() == '.' ||
      revision.ends_with(".lock")) {
    refuse("it may not start or end with '/', nor end with '.' or '.lock'");
  }
  // A ref becomes a file under refs/ (DESIGN §16): as git, no part of it starts with '.'.
  if (revision.front() == '.' || revision.find("/.") != std::string_view::npos) {
    refuse("no part of it may start with '.'");
  }
}

}  // namespace rbee::catalog
