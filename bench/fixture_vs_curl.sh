#!/usr/bin/env bash
# One file from the local test Hub, downloaded by rbee-hive (verified, written to disk) and by
# curl (written to disk, then sha256sum for a like-for-like check), alternating, several runs.
# Prints each run and the medians. Loopback only; nothing leaves the machine.
#
#   bash bench/fixture_vs_curl.sh [size_bytes=1073741824] [runs=3]
#
# This is the provisioner's baseline measurement; the full harness (nginx, aria2c, the JS client,
# multi-connection) is the speed issue's work.
set -euo pipefail

SIZE=${1:-1073741824}
RUNS=${2:-3}
CONNECTIONS=${CONNECTIONS:-1}  # the hive's connections for the file (curl has one)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${BUILD_DIR:-$ROOT/build}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbee-bench.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

make -C "$ROOT" build >/dev/null
command -v curl >/dev/null || { echo "curl is needed: apt-get install curl" >&2; exit 1; }

"$BUILD/tests/rbee-hub-fixture" --repo bench/one --lfs-file "model.gguf:$SIZE" >"$WORK/fixture.out" &
PIDS+=($!)
until grep -q '^endpoint ' "$WORK/fixture.out" 2>/dev/null; do sleep 0.1; done
ENDPOINT=$(awk '/^endpoint /{print $2}' "$WORK/fixture.out")
URL="$ENDPOINT/bench/one/resolve/main/model.gguf"

HF_ENDPOINT=$ENDPOINT HF_HOME=$WORK/hf "$BUILD/hive/rbee-hive" --port 0 \
  --cache-dir "$WORK/models" --disk-reserve-mb 0 2>"$WORK/hive.log" &
PIDS+=($!)
until grep -q 'Listening on' "$WORK/hive.log" 2>/dev/null; do sleep 0.1; done
PORT=$(sed -n 's/.*Listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/hive.log" | head -1)

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
hive_run() {
  rm -rf "$WORK/models/bench"
  local start job
  start=$(now)
  job=$(curl -sf -X POST "http://127.0.0.1:$PORT/v1/jobs" -H 'Content-Type: application/json' \
          -d "{\"operation\":\"model_download\",\"model\":\"bench/one\",\"connections\":$CONNECTIONS}" | sed 's/.*"job_id":"\([^"]*\)".*/\1/')
  local last
  last=$(curl -sN "http://127.0.0.1:$PORT/v1/jobs/$job/stream" | grep '^data: \[' | tail -1)
  [[ $last == "data: [DONE]" ]] || { echo "hive run failed: $last" >&2; exit 1; }
  elapsed "$start"
}
curl_run() {
  rm -f "$WORK/curl.bin"
  local start
  start=$(now)
  curl -sfL -o "$WORK/curl.bin" "$URL"
  local fetched
  fetched=$(elapsed "$start")
  sha256sum "$WORK/curl.bin" >/dev/null
  echo "$fetched $(elapsed "$start")"
}
mib_s() { awk -v s="$SIZE" -v t="$1" 'BEGIN {printf "%.0f", s / 1048576 / t}'; }

echo "file: $SIZE bytes from $URL (generated, loopback); $RUNS runs, alternating"
: >"$WORK/hive.t"; : >"$WORK/curl.t"; : >"$WORK/curlsha.t"
for run in $(seq 1 "$RUNS"); do
  h=$(hive_run); read -r c cs < <(curl_run)
  echo "$h" >>"$WORK/hive.t"; echo "$c" >>"$WORK/curl.t"; echo "$cs" >>"$WORK/curlsha.t"
  printf 'run %d: rbee-hive %.2f s | curl -o %.2f s | curl -o + sha256sum %.2f s\n' "$run" "$h" "$c" "$cs"
done
H=$(median <"$WORK/hive.t"); C=$(median <"$WORK/curl.t"); CS=$(median <"$WORK/curlsha.t")
echo
echo "| tool | median wall time | throughput |"
echo "|---|---|---|"
echo "| rbee-hive model_download, $CONNECTIONS connection(s) (listing, download, SHA-256, fsync, catalog) | ${H} s | $(mib_s "$H") MiB/s |"
echo "| curl -L -o | ${C} s | $(mib_s "$C") MiB/s |"
echo "| curl -L -o, then sha256sum | ${CS} s | $(mib_s "$CS") MiB/s |"
