#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with Debian's clang and runs each for N seconds
# (default 120), starting from the seed corpus in tests/fuzz/corpus/<target>. New inputs go to
# build-fuzz/corpus/<target>; a crash leaves its input in build-fuzz/ and fails the run.
#
#   bash scripts/fuzz.sh        # `make fuzz`: two minutes per target
#   bash scripts/fuzz.sh 5      # CI: a few seconds per target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
build=build-fuzz

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DRBEE_SANITIZE=fuzz \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target fuzz_targets >/dev/null

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
