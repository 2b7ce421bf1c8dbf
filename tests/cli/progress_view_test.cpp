#include <doctest/doctest.h>
#include <rbee/cli/progress_view.hpp>

#include <sstream>

using nlohmann::json;
using rbee::cli::ProgressView;

namespace {

json narration(const std::string& action, const std::string& human, std::string level = "info") {
  return {{"type", "narration"},
          {"action", action},
          {"human", human},
          {"level", level},
          {"emitted_at_ms", 1795383181260}};
}

json progress(std::uint64_t done, std::uint64_t total, json files) {
  json event = narration("download_progress", "progress");
  event.update({{"model_bytes_done", done},
                {"model_bytes_total", total},
                {"bytes_per_sec", 1048576.0},
                {"eta_s", 3.0},
                {"files", std::move(files)}});
  return event;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("off a terminal every event is one plain timestamped line, warnings tagged") {
  std::ostringstream out;
  ProgressView view(out, 0);
  view.on_event(narration("file_started", "Downloading a.gguf (2.0 MiB)"));
  view.on_event(
      progress(1024, 2048,
               json::array({{{"file", "a.gguf"}, {"bytes_done", 1024}, {"bytes_total", 2048}}})));
  view.on_event(narration("download_retry", "Retrying a.gguf", "warn"));
  view.close();
  const auto lines = lines_of(out.str());
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].ends_with(" Downloading a.gguf (2.0 MiB)"));
  CHECK(lines[0].size() == 9 + std::string("Downloading a.gguf (2.0 MiB)").size());  // "hh:mm:ss "
  CHECK(lines[1].ends_with(" progress"));
  CHECK(lines[2].ends_with(" warn: Retrying a.gguf"));
  CHECK(out.str().find('\x1b') == std::string::npos);
}

TEST_CASE("on a terminal, bars per file in flight and a total are repainted in place") {
  std::ostringstream out;
  ProgressView view(out, 100);
  view.on_event(
      progress(512, 4096,
               json::array({{{"file", "a.gguf"}, {"bytes_done", 256}, {"bytes_total", 1024}},
                            {{"file", "b.gguf"}, {"bytes_done", 256}, {"bytes_total", 3072}}})));
  std::string first = out.str();
  CHECK(first.find("a.gguf") != std::string::npos);
  CHECK(first.find(" 25%") != std::string::npos);  // a.gguf
  CHECK(first.find(" 12%") != std::string::npos);  // the total, 512 of 4096
  CHECK(first.find("ETA 3 s") != std::string::npos);

  out.str("");
  view.on_event(narration("file_verified", "Verified a.gguf"));
  const std::string second = out.str();
  CHECK(second.starts_with("\x1b[3A\r\x1b[J"));  // up over the three bars, erase them
  CHECK(second.find("Verified a.gguf\n") != std::string::npos);        // the line goes above
  CHECK(second.find("b.gguf") != std::string::npos);                   // and the bars below again
  for (const auto& line : lines_of(second)) CHECK(line.size() < 100);  // never wraps
}

TEST_CASE("closing leaves the last bars on screen and repaints nothing after") {
  std::ostringstream out;
  ProgressView view(out, 80);
  view.on_event(progress(4096, 4096, json::array()));
  view.close();
  const std::string closed = out.str();
  CHECK(closed.find("100%") != std::string::npos);
  CHECK(closed.find("ETA") == std::string::npos);  // nothing is left to wait for
  view.repaint();
  view.on_event(narration("job_completed", "Completed"));
  CHECK(out.str() == closed);
}

TEST_CASE("text from the hive reaches the terminal without control characters") {
  std::ostringstream out;
  ProgressView view(out, 0);
  view.on_event(narration("file_failed", "model\x1b]0;pwned\x07.gguf \x1b[2Jfailed\xff"));
  json data = {{"type", "data"}, {"payload", {{"name", "a\x1b[31mb\x9b"}}}};
  view.on_event(data);
  const std::string text = out.str();
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\x07') == std::string::npos);
  CHECK(text.find("failed") != std::string::npos);
  CHECK(rbee::cli::terminal_safe("two\nlines\x1b") == "two\nlines\xef\xbf\xbd");
}

TEST_CASE("on a terminal a long narration line is wrapped at spaces, its end kept") {
  std::ostringstream out;
  ProgressView view(out, 60);
  const std::string human =
      "Retrying tiny.Q2_K.gguf in 0.4 s (attempt 2): stalled (under 16384 bytes in 30000 ms)";
  view.on_event(narration("download_retry", human, "warn"));
  view.close();
  std::string joined;
  for (auto line : lines_of(out.str())) {
    if (const auto clear = line.rfind("\x1b[J"); clear != std::string::npos)
      line.erase(0, clear + 3);
    if (line.empty() || line.starts_with("Waiting for")) continue;  // the bars' line
    CHECK(line.size() < 60);
    joined += line + " ";
  }
  CHECK(joined.find("in 30000 ms)") != std::string::npos);  // was cut at "…bytes in 30"
  CHECK(joined.find("tiny.Q2_K.gguf") != std::string::npos);
}

TEST_CASE("a data event is said in a sentence, not printed as JSON") {
  std::ostringstream out;
  ProgressView view(out, 0);
  view.on_event(
      {{"type", "data"},
       {"action", "model_download"},
       {"payload", {{"model", "acme/tiny-model"}, {"requested", "acme/x"}, {"fallback", true}}}});
  view.on_event({{"type", "data"},
                 {"action", "model_download"},
                 {"payload", {{"model", "acme/x"}, {"requested", "acme/x"}, {"fallback", false}}}});
  const auto lines = lines_of(out.str());
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "Installed acme/tiny-model (fallback for acme/x)");
  CHECK(lines[1] == "Installed acme/x");
}

TEST_CASE("a cancelled view marks its bars; the final speed is the one the summary says") {
  std::ostringstream out;
  ProgressView view(out, 100);
  view.on_event(
      progress(1024, 4096,
               json::array({{{"file", "a.gguf"}, {"bytes_done", 1024}, {"bytes_total", 4096}}})));
  view.close("cancelled");
  const auto closed = lines_of(out.str());
  CHECK(closed.back().find("cancelled") != std::string::npos);
  CHECK(out.str().rfind("ETA") < out.str().rfind("\x1b[J"));  // only in the live frame

  std::ostringstream done_out;
  ProgressView done(done_out, 100);
  done.on_event(progress(1024, 4096, json::array()));  // a smoothed 1.0 MiB/s
  json completed =
      narration("download_completed", "Downloaded acme/x: 1 file, 4.0 KiB (2.0 KiB/s)");
  completed.update({{"model_bytes_done", 4096},
                    {"model_bytes_total", 4096},
                    {"bytes_per_sec", 2048.0},
                    {"files", json::array()}});
  done.on_event(completed);
  done.close();
  CHECK(lines_of(done_out.str()).back().find("2.0 KiB/s") != std::string::npos);
}
