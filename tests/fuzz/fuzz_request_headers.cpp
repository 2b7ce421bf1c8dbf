// libFuzzer: what a client puts in headers and the query: Last-Event-ID, Host, Origin, the
// stream ticket of ?ticket=, and the query string itself (parsed by cpp-httplib).
#include <httplib.h>
#include <rbee/hive/request_checks.hpp>
#include <rbee/hive/stream_tickets.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  // Fields separated by newlines: Last-Event-ID, Host, Origin, query string.
  std::vector<std::string> fields;
  for (std::size_t start = 0; start <= input.size() && fields.size() < 4;) {
    const auto end = std::min(input.find('\n', start), input.size());
    fields.push_back(input.substr(start, end - start));
    start = end + 1;
  }
  fields.resize(4);
  (void)rbee::hive::parse_last_event_id(fields[0]);
  const std::vector<std::string> allowed = {"hive.internal"};
  if (const auto name = rbee::hive::host_name(fields[1])) {
    if (name->empty()) std::abort();
  }
  const bool allowed_host = rbee::hive::is_allowed_host(fields[1], allowed);
  (void)rbee::hive::is_same_origin(fields[2], fields[1]);
  (void)allowed_host;

  httplib::Params params;
  httplib::detail::parse_query_text(fields[3], params);
  static rbee::hive::StreamTickets tickets(8);
  static const std::string issued = tickets.issue("job-a").value();
  for (const auto& [key, value] : params) {
    if (key == "ticket" && value != issued && tickets.admits(value, "job-a")) std::abort();
  }
  return 0;
}
