#include "rbee/catalog/model_entry.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "rbee/catalog/repo_store.hpp"

namespace rbee::catalog {
namespace {

constexpr std::array<std::string_view, 6> kStatusNames = {"downloading", "ready",       "failed",
                                                          "cancelled",   "interrupted", "deleting"};

// Timestamps are RFC 3339 UTC strings with milliseconds, readable by people and every language.
std::string format_time(std::int64_t unix_ms) {
  const std::chrono::sys_time<std::chrono::milliseconds> time{std::chrono::milliseconds(unix_ms)};
  const auto seconds = std::chrono::floor<std::chrono::seconds>(time);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", seconds,
                     static_cast<int>((time - seconds).count()));
}

std::int64_t parse_time(const std::string& text) {
  std::tm tm{};
  int millis = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &millis) != 7) {
    throw std::runtime_error(fmt::format("bad timestamp '{}'", text));
  }
  // Years past 2262 overflow the nanosecond clocks some formatters convert through; every other
  // field out of range is caught below, as a timestamp that does not format back to itself.
  if (tm.tm_year < 1970 || tm.tm_year > 2200) {
    throw std::runtime_error(fmt::format("timestamp '{}' is out of range", text));
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const std::int64_t unix_ms = static_cast<std::int64_t>(timegm(&tm)) * 1000 + millis;
  // timegm normalises (February 31 becomes March 3): only a canonical timestamp is a real one.
  if (format_time(unix_ms) != text) {
    throw std::runtime_error(fmt::format("timestamp '{}' is not a valid date", text));
  }
  return unix_ms;
}

void emit_string(YAML::Emitter& out, std::string_view key, const std::string& value) {
  out << YAML::Key << std::string(key) << YAML::Value << YAML::DoubleQuoted << value;
}

template <typename T>
void emit_number(YAML::Emitter& out, std::string_view key, T value) {
  out << YAML::Key << std::string(key) << YAML::Value << value;
}

// metadata.yaml read as a stream of parser events, so memory follows the entry's own size: the
// node tree yaml-cpp builds for a 100 000-file entry (20 MB of text) took about 500 MB. The
// layout is ours: a mapping of scalars with three nested fields: `files` (a list of mappings of
// scalars), `refs` (a mapping of scalars) and `revisions` (a list of mappings of scalars, each
// with its own `files`). Anything nested elsewhere (or an alias, or a null) is kept as "not a
// scalar", so the field reads as the wrong type, as it did with the node tree.
class EntryEvents final : public YAML::EventHandler {
 public:
  using Fields = std::map<std::string, std::optional<std::string>, std::less<>>;
  struct Revision {
    Fields fields;
    std::vector<Fields> files;
    bool files_is_list = false;
  };

  Fields top;
  std::vector<Fields> files;
  Fields refs;
  std::vector<Revision> revisions;
  bool root_is_mapping = false;
  bool files_is_list = false;
  bool refs_is_mapping = false;
  bool revisions_is_list = false;
  std::string structure_error;  // the first thing that is not our layout

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override { on_value(std::nullopt); }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { on_value(std::nullopt); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string& value) override {
    on_value(value);
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    on_open(true);
  }
  void OnSequenceEnd() override { on_close(); }
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    on_open(false);
  }
  void OnMapEnd() override { on_close(); }

 private:
  // Mappings of scalars (top, file, refs, revision, revision_file) and the lists that hold them.
  enum class Level { top, files, file, refs, revisions, revision, revision_files, revision_file };

  static bool is_list(Level level) {
    return level == Level::files || level == Level::revisions || level == Level::revision_files;
  }

  Fields& current_fields() {
    switch (stack_.back()) {
      case Level::file:
        return files.back();
      case Level::refs:
        return refs;
      case Level::revision:
        return revisions.back().fields;
      case Level::revision_file:
        return revisions.back().files.back();
      default:
        return top;
    }
  }

  void fail(std::string reason) {
    if (structure_error.empty()) structure_error = std::move(reason);
  }

  void on_value(std::optional<std::string> value) {
    if (skipped_depth_ > 0 || stack_.empty()) return;  // a scalar document is not a mapping
    if (is_list(stack_.back())) return fail("every entry of a list must be a mapping");
    if (!key_) {
      if (!value) return fail("a key is not text");
      key_ = std::move(value);
    } else {
      current_fields()[*key_] = std::move(value);
      key_.reset();
    }
  }

  void open_list_entry(bool sequence) {
    if (sequence) {
      fail("every entry of a list must be a mapping");
      skipped_depth_ = 1;
      return;
    }
    switch (stack_.back()) {
      case Level::files:
        files.emplace_back();
        stack_.push_back(Level::file);
        break;
      case Level::revisions:
        revisions.emplace_back();
        stack_.push_back(Level::revision);
        break;
      default:
        revisions.back().files.emplace_back();
        stack_.push_back(Level::revision_file);
        break;
    }
  }

  // The level a nested value under `key` opens at `level`, if it is one of ours.
  std::optional<Level> nested_level(Level level, const std::string& key, bool sequence) {
    if (level == Level::top && key == "files" && sequence) {
      files_is_list = true;
      return Level::files;
    }
    if (level == Level::top && key == "refs" && !sequence) {
      refs_is_mapping = true;
      return Level::refs;
    }
    if (level == Level::top && key == "revisions" && sequence) {
      revisions_is_list = true;
      return Level::revisions;
    }
    if (level == Level::revision && key == "files" && sequence) {
      revisions.back().files_is_list = true;
      return Level::revision_files;
    }
    return std::nullopt;
  }

  void on_open(bool sequence) {
    if (skipped_depth_ > 0) {
      ++skipped_depth_;
      return;
    }
    if (stack_.empty()) {
      root_is_mapping = !sequence;
      if (sequence)
        skipped_depth_ = 1;
      else
        stack_.push_back(Level::top);
      return;
    }
    if (is_list(stack_.back())) return open_list_entry(sequence);
    if (!key_) {
      fail("a key is not text");
      skipped_depth_ = 1;
      return;
    }
    const auto nested = nested_level(stack_.back(), *key_, sequence);
    current_fields()[*key_] = std::nullopt;  // a nested value where a scalar belongs, or ours
    if (nested)
      stack_.push_back(*nested);
    else
      skipped_depth_ = 1;
    key_.reset();
  }

  void on_close() {
    if (skipped_depth_ > 0) {
      --skipped_depth_;
      return;
    }
    if (!stack_.empty()) stack_.pop_back();
    key_.reset();
  }

  std::vector<Level> stack_;
  std::optional<std::string> key_;  // a key read, its value not yet
  int skipped_depth_ = 0;           // inside a structure that is not ours
};

template <typename T>
T field(const EntryEvents::Fields& fields, std::string_view key) {
  const auto found = fields.find(key);
  if (found == fields.end()) throw std::runtime_error(fmt::format("missing field '{}'", key));
  try {
    if (!found->second) throw YAML::Exception(YAML::Mark::null_mark(), "not a scalar");
    return YAML::Node(*found->second).as<T>();
  } catch (const YAML::Exception&) {
    throw std::runtime_error(fmt::format("field '{}' has the wrong type", key));
  }
}

ModelFile parse_file(const EntryEvents::Fields& fields, bool schema1) {
  ModelFile file{field<std::string>(fields, "path"),
                 field<std::uint64_t>(fields, "size"),
                 field<std::string>(fields, "sha256"),
                 field<std::string>(fields, "etag"),
                 field<std::string>(fields, "state"),
                 schema1 ? std::string() : field<std::string>(fields, "blob")};
  validate_repo_path(file.path);
  return file;
}

std::vector<ModelFile> parse_files(const std::vector<EntryEvents::Fields>& list, bool schema1) {
  std::vector<ModelFile> files;
  files.reserve(list.size());
  for (const auto& file : list) files.push_back(parse_file(file, schema1));
  return files;
}

ModelStatus status_field(const EntryEvents::Fields& fields) {
  try {
    return parse_model_status(field<std::string>(fields, "status"));
  } catch (const std::invalid_argument& error) {
    throw std::runtime_error(error.what());
  }
}

RevisionRecord parse_revision(const EntryEvents::Revision& revision) {
  RevisionRecord record;
  record.commit = field<std::string>(revision.fields, "commit");
  if (!is_commit_id(record.commit)) {
    throw std::runtime_error("a revision's commit is not 40 hex digits");
  }
  record.status = status_field(revision.fields);
  record.size = field<std::uint64_t>(revision.fields, "size");
  record.error = field<std::string>(revision.fields, "error");
  record.added_at_ms = parse_time(field<std::string>(revision.fields, "added_at"));
  if (!revision.files_is_list) throw std::runtime_error("a revision's 'files' must be a list");
  record.files = parse_files(revision.files, false);
  return record;
}

void emit_files(YAML::Emitter& out, const std::vector<ModelFile>& files) {
  out << YAML::Key << "files" << YAML::Value << YAML::BeginSeq;
  for (const ModelFile& file : files) {
    out << YAML::BeginMap;
    emit_string(out, "path", file.path);
    emit_number(out, "size", file.size);
    emit_string(out, "sha256", file.sha256);
    emit_string(out, "etag", file.etag);
    emit_string(out, "state", file.state);
    emit_string(out, "blob", file.blob);
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
}

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
bool is_valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const std::size_t length = byte < 0x80                    ? 1
                               : byte >= 0xC2 && byte <= 0xDF ? 2
                               : byte >= 0xE0 && byte <= 0xEF ? 3
                               : byte >= 0xF0 && byte <= 0xF4 ? 4
                                                              : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    const auto second = static_cast<unsigned char>(length > 1 ? text[i + 1] : 0);
    if ((byte == 0xE0 && second < 0xA0) || (byte == 0xED && second > 0x9F) ||
        (byte == 0xF0 && second < 0x90) || (byte == 0xF4 && second > 0x8F)) {
      return false;
    }
    i += length;
  }
  return true;
}

}  // namespace

std::string_view to_string(ModelStatus status) {
  return kStatusNames[static_cast<std::size_t>(status)];
}

ModelStatus parse_model_status(std::string_view text) {
  auto it = std::find(kStatusNames.begin(), kStatusNames.end(), text);
  if (it == kStatusNames.end()) {
    throw std::invalid_argument(fmt::format("unknown model status '{}'", text));
  }
  return static_cast<ModelStatus>(it - kStatusNames.begin());
}

const RevisionRecord* ModelEntry::find_revision(std::string_view commit) const {
  for (const auto& revision : revisions) {
    if (revision.commit == commit) return &revision;
  }
  return nullptr;
}

RevisionRecord& ModelEntry::revision_record(const std::string& commit) {
  const auto at = std::lower_bound(
      revisions.begin(), revisions.end(), commit,
      [](const RevisionRecord& record, const std::string& key) { return record.commit < key; });
  if (at != revisions.end() && at->commit == commit) return *at;
  RevisionRecord fresh;
  fresh.commit = commit;
  return *revisions.insert(at, std::move(fresh));
}

void ModelEntry::end_download(ModelStatus ended, std::string reason) {
  status = ended;
  error = std::move(reason);
  for (auto& revision : revisions) {
    if (revision.commit == commit && revision.status != ModelStatus::ready) {
      revision.status = ended;
      revision.error = error;
    }
  }
}

double ModelEntry::progress() const {
  if (status == ModelStatus::ready) return 1.0;
  if (bytes_total == 0) return 0.0;
  return std::min(1.0, static_cast<double>(bytes_done) / static_cast<double>(bytes_total));
}

std::string to_yaml(const ModelEntry& entry) {
  YAML::Emitter out;
  out.SetDoublePrecision(6);
  out << YAML::BeginMap;
  emit_number(out, "schema", kSchemaVersion);
  emit_string(out, "id", entry.id.str());
  emit_string(out, "source", entry.source);
  emit_string(out, "endpoint", entry.endpoint);
  emit_string(out, "revision", entry.revision);
  emit_string(out, "commit", entry.commit);
  emit_string(out, "path", entry.path);
  emit_string(out, "status", std::string(to_string(entry.status)));
  emit_number(out, "bytes_done", entry.bytes_done);
  emit_number(out, "bytes_total", entry.bytes_total);
  emit_number(out, "progress", entry.progress());
  emit_number(out, "size", entry.bytes_total);
  emit_string(out, "error", entry.error);
  emit_files(out, entry.files);
  out << YAML::Key << "refs" << YAML::Value << YAML::BeginMap;
  for (const auto& [ref, commit] : entry.refs) emit_string(out, ref, commit);
  out << YAML::EndMap;
  out << YAML::Key << "revisions" << YAML::Value << YAML::BeginSeq;
  for (const RevisionRecord& revision : entry.revisions) {
    out << YAML::BeginMap;
    emit_string(out, "commit", revision.commit);
    emit_string(out, "status", std::string(to_string(revision.status)));
    emit_number(out, "size", revision.size);
    emit_string(out, "error", revision.error);
    emit_string(out, "added_at", format_time(revision.added_at_ms));
    emit_files(out, revision.files);
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  emit_string(out, "added_at", format_time(entry.added_at_ms));
  emit_string(out, "updated_at", format_time(entry.updated_at_ms));
  emit_string(out, "last_job_id", entry.last_job_id);
  out << YAML::EndMap;
  if (!out.good()) throw std::runtime_error("YAML emitter failed: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

ModelEntry parse_model_entry(std::string_view yaml, bool schema1) {
  // YAML is UTF-8; yaml-cpp would read a stray byte as a Latin-1 character and write it back
  // as another, so an entry with one could never be written back unchanged.
  if (!is_valid_utf8(yaml)) throw std::runtime_error("not valid UTF-8");
  EntryEvents events;
  try {
    std::istringstream in{std::string(yaml)};
    YAML::Parser parser(in);
    parser.HandleNextDocument(events);
  } catch (const YAML::Exception& error) {
    throw std::runtime_error(fmt::format("not valid YAML ({})", error.msg));
  }
  if (!events.root_is_mapping) throw std::runtime_error("not a YAML mapping");
  if (!events.structure_error.empty()) throw std::runtime_error(events.structure_error);
  const auto& root = events.top;
  const int schema = field<int>(root, "schema");
  const int expected = schema1 ? 1 : kSchemaVersion;
  if (schema != expected) {
    throw std::runtime_error(
        fmt::format("schema {} is not supported (expected {})", schema, expected));
  }
  ModelEntry entry;
  entry.id = parse_model_id(field<std::string>(root, "id"));
  entry.source = field<std::string>(root, "source");
  entry.endpoint = field<std::string>(root, "endpoint");
  entry.revision = field<std::string>(root, "revision");
  entry.commit = field<std::string>(root, "commit");
  entry.path = field<std::string>(root, "path");
  entry.status = status_field(root);
  entry.bytes_done = field<std::uint64_t>(root, "bytes_done");
  entry.bytes_total = field<std::uint64_t>(root, "bytes_total");
  entry.error = field<std::string>(root, "error");
  if (!root.contains("files")) throw std::runtime_error("missing field 'files'");
  if (!events.files_is_list) throw std::runtime_error("field 'files' must be a list");
  entry.files = parse_files(events.files, schema1);
  if (!schema1) {
    if (!events.refs_is_mapping) throw std::runtime_error("field 'refs' must be a mapping");
    for (const auto& [ref, commit] : events.refs) {
      validate_revision(ref);
      if (!commit || !is_commit_id(*commit)) {
        throw std::runtime_error(fmt::format("ref '{}' names no commit", ref));
      }
      entry.refs[ref] = *commit;
    }
    if (!events.revisions_is_list) throw std::runtime_error("field 'revisions' must be a list");
    for (const auto& revision : events.revisions) {
      RevisionRecord record = parse_revision(revision);
      const std::string commit = record.commit;
      entry.revision_record(commit) = std::move(record);
    }
  }
  entry.added_at_ms = parse_time(field<std::string>(root, "added_at"));
  entry.updated_at_ms = parse_time(field<std::string>(root, "updated_at"));
  // The last field written: a file cut short anywhere before it is refused, not half-read.
  entry.last_job_id = field<std::string>(root, "last_job_id");
  return entry;
}

}  // namespace rbee::catalog
