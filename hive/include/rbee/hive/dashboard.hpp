#pragma once
// The dashboard served at GET /: one self-contained HTML page (hive/dashboard/index.html),
// embedded at build time, so the hive needs no files and no network to serve it.

#include <string_view>

namespace rbee::hive {

std::string_view dashboard_page();

}  // namespace rbee::hive
