#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <rbee/catalog/file_lock.hpp>

#include <atomic>
#include <optional>
#include <thread>

#include "support/temp_dir.hpp"

using namespace rbee::catalog;
using rbee::testing::TempDir;
using namespace std::chrono_literals;

TEST_CASE("two threads of one process exclude each other") {
  TempDir dir;
  const auto path = dir / "x.lock";
  std::atomic<bool> second_has_it{false};
  std::optional<FileLock> first(std::in_place, path);
  std::thread other([&] {
    FileLock second(path);
    second_has_it = true;
  });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(second_has_it.load());
  first.reset();
  other.join();
  CHECK(second_has_it.load());
}

TEST_CASE("another process cannot take a held lock until it is released") {
  TempDir dir;
  const auto path = dir / "x.lock";
  auto lock = std::make_unique<FileLock>(path);
  const pid_t child = ::fork();
  if (child == 0) {
    std::stop_source give_up;
    std::thread timer([&] {
      std::this_thread::sleep_for(100ms);
      give_up.request_stop();
    });
    int code = 0;
    try {
      FileLock attempt(path, give_up.get_token());
      code = 1;  // got a lock the parent holds: wrong
    } catch (const CatalogError& error) {
      code = error.code() == CatalogErrorCode::cancelled ? 0 : 2;
    }
    timer.join();
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WEXITSTATUS(status) == 0);
  lock.reset();
  CHECK_NOTHROW(FileLock(path, std::stop_source().get_token()));
}

TEST_CASE("a cancelled wait for a lock throws cancelled promptly") {
  TempDir dir;
  const auto path = dir / "x.lock";
  FileLock held(path);
  std::stop_source stop;
  std::thread canceller([&] {
    std::this_thread::sleep_for(30ms);
    stop.request_stop();
  });
  try {
    FileLock waiting(path, stop.get_token());
    FAIL("took a held lock");
  } catch (const CatalogError& error) {
    CHECK(error.code() == CatalogErrorCode::cancelled);
  }
  canceller.join();
}
