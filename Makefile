# The two commands of the README: `make run` and `make test`.
BUILD_DIR ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: deps test-deps build run test test-asan test-tsan fuzz format bench clean

deps:
	bash scripts/install-deps.sh

test-deps:
	bash scripts/install-deps.sh --for-tests

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_DIR) -j$(JOBS)

# Installs, builds and starts the hive on 127.0.0.1:7835 with the cache in ~/.cache/rbee/models.
run: build
	$(BUILD_DIR)/hive/rbee-hive $(ARGS)

# Installs, builds and runs every test.
test: test-deps build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, built with clang: the same
# build holds the fuzz targets (make fuzz).
ASAN_FLAGS = -DCMAKE_CXX_COMPILER=clang++ -DRBEE_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug
test-asan:
	$(MAKE) test BUILD_DIR=build-asan CMAKE_FLAGS="$(ASAN_FLAGS)"

# The same suite under ThreadSanitizer (tests/tsan.supp says why one library frame is exempt).
test-tsan:
	TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp $(TSAN_OPTIONS)" \
	  $(MAKE) test BUILD_DIR=build-tsan CMAKE_FLAGS="-DRBEE_SANITIZE=thread -DCMAKE_BUILD_TYPE=Debug"

# libFuzzer targets for every parser of outside input (tests/fuzz), FUZZ_SECONDS each, from the
# ASan+UBSan build (built here when make test-asan has not built it yet).
FUZZ_SECONDS ?= 120
fuzz: test-deps
	cmake -S . -B build-asan $(ASAN_FLAGS) >/dev/null
	cmake --build build-asan -j$(JOBS) --target fuzz_targets
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# The benchmark harness (bench/README.md): installs nginx, aria2, gnuplot; a few minutes.
bench:
	bash bench/run.sh

# Formats every C++ file with the repo's .clang-format.
format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf build build-asan build-tsan
