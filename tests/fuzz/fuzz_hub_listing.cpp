// libFuzzer: the Hub's repo listing JSON, the Location of a redirect and a Content-Range, as
// a hostile Hub may send them. Whatever parse_listing accepts obeys its promises: no duplicate
// path, no size past kMaxFileBytes, sums within kMaxRepoBytes; a Location is only ever http(s).
#include <rbee/provisioner/content_range.hpp>
#include <rbee/provisioner/hub_client.hpp>
#include <rbee/provisioner/listing.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto info = rbee::provisioner::parse_listing(text, {.max_entries = 1000});
    std::set<std::string> paths;
    std::uint64_t total = 0;
    for (const auto& sibling : info.siblings) {
      if (sibling.path.empty() || !paths.insert(sibling.path).second) std::abort();
      if (sibling.size > rbee::provisioner::kMaxFileBytes) std::abort();
      total += sibling.size;
    }
    if (total > rbee::provisioner::kMaxRepoBytes) std::abort();
  } catch (const rbee::provisioner::HubError&) {
  }
  static const auto base = rbee::provisioner::parse_url("https://huggingface.co/api/models/a/b");
  if (const auto next = rbee::provisioner::resolve_location(*base, text)) {
    if (next->scheme != "http" && next->scheme != "https") std::abort();
    if (next->host.empty() || next->target.empty()) std::abort();
  }
  if (const auto range = rbee::provisioner::parse_content_range(text)) {
    if (range->first > range->last) std::abort();
    if (range->total && range->last >= *range->total) std::abort();
  }
  return 0;
}
