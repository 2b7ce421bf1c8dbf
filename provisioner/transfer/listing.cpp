#include "rbee/provisioner/listing.hpp"

#include <algorithm>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "rbee/provisioner/hub_client.hpp"

namespace rbee::provisioner {
namespace {

constexpr std::size_t kMaxStringBytes = 4096;
constexpr std::size_t kMaxRevisions = 64;  // a path or a hash; anything longer is hostile

[[noreturn]] void reject(const std::string& what) {
  throw HubError(HubErrorKind::protocol, "the Hub's listing is invalid: " + what);
}

// Where in the document the parser is: only the fields the hive reads are kept; any other
// value, however deep, is skipped by depth counting.
class ListingReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit ListingReader(const ListingLimits& limits) : limits_(limits) {}

  RepoInfo finish() {
    if (!saw_siblings_) reject("it has no \"siblings\" list");
    auto& siblings = info_.siblings;
    std::vector<std::string_view> paths;
    paths.reserve(siblings.size());
    for (const auto& sibling : siblings) paths.emplace_back(sibling.path);
    std::sort(paths.begin(), paths.end());
    if (std::adjacent_find(paths.begin(), paths.end()) != paths.end()) {
      reject("a file is listed twice");
    }
    return std::move(info_);
  }

  bool null() override { return scalar(Value::other); }
  bool boolean(bool value) override {
    boolean_ = value;
    return scalar(Value::boolean);
  }
  bool number_integer(number_integer_t value) override {
    return value < 0 ? scalar(Value::negative) : size_value(static_cast<std::uint64_t>(value));
  }
  bool number_unsigned(number_unsigned_t value) override { return size_value(value); }
  bool number_float(number_float_t, const string_t&) override { return scalar(Value::fraction); }
  bool binary(binary_t&) override { return scalar(Value::other); }
  bool string(string_t& value) override {
    if (value.size() > kMaxStringBytes) reject("a string is longer than 4096 bytes");
    string_ = std::move(value);
    return scalar(Value::string);
  }

  bool start_object(std::size_t) override {
    if (skipping_ > 0 || !enter_object()) ++skipping_;
    return true;
  }
  bool end_object() override {
    if (skipping_ > 0) {
      --skipping_;
      return true;
    }
    leave_object();
    return true;
  }
  bool start_array(std::size_t) override {
    if (skipping_ > 0) {
      ++skipping_;
    } else if (level_ == Level::document) {
      reject("it is not a JSON object");
    } else if (level_ == Level::top && key_ == "siblings") {
      level_ = Level::siblings;
      saw_siblings_ = true;
    } else if (level_ == Level::top && key_ == "rbee_revisions") {
      level_ = Level::revisions;
    } else if (level_ == Level::siblings) {
      reject("an entry of \"siblings\" is not an object");
    } else if (level_ != Level::top && is_read_field()) {
      reject(fmt::format("\"{}\" of a file is a list", key_));
    } else {
      ++skipping_;  // a field the hive does not read
    }
    return true;
  }
  bool end_array() override {
    if (skipping_ > 0) {
      --skipping_;
    } else {
      level_ = Level::top;
    }
    return true;
  }
  bool key(string_t& key) override {
    if (skipping_ == 0) key_ = key.size() <= 64 ? std::move(key) : std::string();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception&) override {
    reject(fmt::format("it is not valid JSON (at byte {})", position));
  }

 private:
  enum class Level { document, top, siblings, sibling, lfs, revisions };
  enum class Value { string, size, negative, fraction, boolean, other };

  bool enter_object() {
    switch (level_) {
      case Level::document:
        level_ = Level::top;
        return true;
      case Level::siblings:
        if (info_.siblings.size() >= limits_.max_entries) {
          reject(fmt::format("it lists more than {} files", limits_.max_entries));
        }
        info_.siblings.emplace_back();
        size_seen_ = false;
        level_ = Level::sibling;
        return true;
      case Level::sibling:
        if (key_ != "lfs") return false;
        level_ = Level::lfs;
        return true;
      default:
        return false;
    }
  }

  void leave_object() {
    switch (level_) {
      case Level::lfs:
        level_ = Level::sibling;
        break;
      case Level::sibling:
        check_sibling(info_.siblings.back());
        level_ = Level::siblings;
        break;
      default:
        level_ = Level::document;
    }
  }

  void check_sibling(const Sibling& sibling) {
    if (sibling.path.empty()) reject("a file has no \"rfilename\"");
    if (!size_seen_) reject("a file has no \"size\"");
    if (__builtin_add_overflow(total_bytes_, sibling.size, &total_bytes_) ||
        total_bytes_ > kMaxRepoBytes) {
      reject("the sizes add up to more than any repo holds");
    }
  }

  bool size_value(std::uint64_t value) {
    size_ = value;
    return scalar(Value::size);
  }

  // A scalar at the current position: kept when it is a field the hive reads, checked for type.
  bool scalar(Value type) {
    if (skipping_ > 0) return true;
    const bool in_file = level_ == Level::sibling || level_ == Level::lfs;
    if (level_ == Level::top && key_ == "sha") {
      if (type != Value::string) reject("\"sha\" is not a string");
      info_.commit = std::move(string_);
    } else if (level_ == Level::top && key_ == "gated") {
      // false, or how access is granted ("auto", "manual"): any string means gated.
      info_.gated = type == Value::string ? !string_.empty() : type == Value::boolean && boolean_;
    } else if (level_ == Level::top && key_ == "private") {
      info_.private_repo = type == Value::boolean && boolean_;
    } else if (level_ == Level::siblings) {
      reject("an entry of \"siblings\" is not an object");
    } else if (level_ == Level::revisions) {
      if (type != Value::string) reject("an entry of \"rbee_revisions\" is not a string");
      if (info_.revisions.size() < kMaxRevisions) info_.revisions.push_back(std::move(string_));
    } else if (in_file && key_ == "size") {
      if (type == Value::negative) reject("a file has a negative size");
      if (type == Value::fraction) reject("a file's size is not a whole number");
      if (type != Value::size) reject("a file's size is not a number");
      if (size_ > kMaxFileBytes) reject("a file's size is larger than any file the Hub stores");
      info_.siblings.back().size = size_;  // lfs.size, which comes later, wins
      size_seen_ = true;
    } else if (level_ == Level::sibling && (key_ == "rfilename" || key_ == "blobId")) {
      if (type != Value::string) reject(fmt::format("\"{}\" is not a string", key_));
      (key_ == "rfilename" ? info_.siblings.back().path : info_.siblings.back().blob_id) =
          std::move(string_);
    } else if (level_ == Level::lfs && key_ == "sha256") {
      if (type != Value::string) reject("\"lfs.sha256\" is not a string");
      info_.siblings.back().lfs_sha256 = std::move(string_);
    }
    return true;
  }

  bool is_read_field() const {
    return key_ == "rfilename" || key_ == "size" || key_ == "blobId" || key_ == "sha256";
  }

  const ListingLimits& limits_;
  RepoInfo info_;
  Level level_ = Level::document;
  std::size_t skipping_ = 0;  // depth inside a value the hive does not read
  std::string key_;
  std::string string_;
  std::uint64_t size_ = 0;
  bool boolean_ = false;
  bool size_seen_ = false;
  bool saw_siblings_ = false;
  std::uint64_t total_bytes_ = 0;
};

}  // namespace

RepoInfo parse_listing(std::string_view json, const ListingLimits& limits) {
  if (json.size() > limits.max_bytes) {
    reject(fmt::format("it is larger than {} bytes", limits.max_bytes));
  }
  ListingReader reader(limits);
  nlohmann::json::sax_parse(json.begin(), json.end(), &reader);
  return reader.finish();
}

}  // namespace rbee::provisioner
