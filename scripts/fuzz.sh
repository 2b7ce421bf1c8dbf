#!/usr/bin/env bash
# Runs each libFuzzer target (tests/fuzz) for N seconds (default 120), starting from the seed
# corpus in tests/fuzz/corpus/<target>. The targets live in the clang ASan+UBSan build
# (build-asan; `make fuzz` builds them first). New inputs go to build-asan/corpus/<target>; a
# crash leaves its input in build-asan/ and fails the run.
#
#   make fuzz                    # two minutes per target
#   make fuzz FUZZ_SECONDS=5     # CI: a few seconds per target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
build=build-asan

if [ ! -x "$build/tests/fuzz/fuzz_operation" ]; then
  echo "fuzz: no fuzz targets in $build: run 'make fuzz' (it builds them)" >&2
  exit 2
fi

for target in fuzz_operation fuzz_model_id fuzz_request_headers fuzz_sse_parser fuzz_sanitize \
              fuzz_hub_listing fuzz_range_sidecar fuzz_catalog_entry fuzz_xet_reconstruction \
              fuzz_xet_chunks; do
  work="$build/corpus/$target"
  mkdir -p "$work"
  echo "fuzz: $target for ${seconds}s" >&2
  (cd "$build" && "./tests/fuzz/$target" -max_total_time="$seconds" -max_len=4096 \
      -print_final_stats=1 "corpus/$target" "../tests/fuzz/corpus/$target" 2>"$target.log") || {
    tail -40 "$build/$target.log" >&2
    echo "fuzz: $target FAILED (input saved in $build/)" >&2
    exit 1
  }
  grep -E "stat::number_of_executed_runs|stat::new_units_added" "$build/$target.log" |
    sed "s/^/fuzz: $target /" >&2
done
echo "fuzz: every target ran ${seconds}s without a finding" >&2
