// The floor of one cpp-httplib connection: GET a URL and discard the body, counting the pieces
// the client hands over. Nothing is written or hashed, so this is the fastest any download built
// on Debian's cpp-httplib can be (bench/httplib_floor.sh runs it beside curl).
//
//   httplib_floor http://127.0.0.1:18090 /file.bin
#include <httplib.h>

#include <chrono>
#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s ORIGIN PATH\n", argv[0]);
    return 2;
  }
  httplib::Client client(argv[1]);
  std::size_t bytes = 0, pieces = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto result = client.Get(argv[2], [&](const char*, std::size_t length) {
    bytes += length;
    ++pieces;
    return true;
  });
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  if (!result || result->status != 200) {
    std::fprintf(stderr, "GET failed: %s\n",
                 result ? std::to_string(result->status).c_str()
                        : httplib::to_string(result.error()).c_str());
    return 1;
  }
  std::printf("%.3f %zu %zu\n", seconds.count(), bytes, pieces);
  return 0;
}
