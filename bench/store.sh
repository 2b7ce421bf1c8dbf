#!/usr/bin/env bash
# The store's price and payoff (DESIGN §16), measured: a measurement, not a test.
#
#   bash bench/store.sh          # STORE_SIZE=1 GiB by default; writes bench/results/store.md
#
# 1. Update a 3-file model (config.json, tokenizer.json and a Xet GGUF of STORE_SIZE) in which
#    revision 2 changes STORE_UPDATE_PERCENT of the GGUF's chunks (rbee-hub-fixture, SIGUSR1),
#    with revision 1 on disk: bytes over the network and seconds, for
#      - rbee-hive now (the store: a new blob and snapshot, the ref moved last),
#      - the hive before the store (STORE_BASELINE_REF, built once from a git worktree: the
#        update rewrote the file in place),
#      - the official JS client (@huggingface/hub downloadFile of revision 2's GGUF, into its own
#        file: it keeps no chunks, and the unchanged files it would skip).
#    Then the disk both revisions take in the store, against two full copies.
# 2. model_list (submit to [DONE]) and GET /v1/models with MODELS entries of 3 revisions each.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
WORK=${BENCH_WORK:-/tmp/rbee-bench}/store
GIB=$((1024 * 1024 * 1024))
STORE_SIZE=${STORE_SIZE:-$GIB}
STORE_UPDATE_PERCENT=${STORE_UPDATE_PERCENT:-1}
STORE_BASELINE_REF=${STORE_BASELINE_REF-bd97371}  # the last hive before the store
MODELS=${MODELS:-1000}
RESULTS=$ROOT/bench/results
PIDS=()

trap kill_started_processes EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }

build() {
  log "building rbee-hive and the Hub fixture (Release)"
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ROOT/build-bench" -j2 --target rbee-hive rbee-hub-fixture >/dev/null
  HIVE_BIN=$ROOT/build-bench/hive/rbee-hive
  FIXTURE_BIN=$ROOT/build-bench/tests/rbee-hub-fixture
  BASELINE_BIN=
  [[ -n $STORE_BASELINE_REF ]] || return 0
  local tree=$WORK/baseline/src-$STORE_BASELINE_REF build=$WORK/baseline/build-$STORE_BASELINE_REF
  if [[ ! -x $build/hive/rbee-hive ]]; then
    log "building the hive before the store ($STORE_BASELINE_REF)"
    rm -rf "$tree"
    mkdir -p "$WORK/baseline"
    git -C "$ROOT" archive "$STORE_BASELINE_REF" | { mkdir -p "$tree" && tar -x -C "$tree"; }
    cmake -S "$tree" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$build" -j2 --target rbee-hive >/dev/null
  fi
  BASELINE_BIN=$build/hive/rbee-hive
  if [[ ! -d $ROOT/bench/tools/node_modules/@huggingface/hub ]]; then
    npm ci --prefix "$ROOT/bench/tools" --no-audit --no-fund --loglevel=error >/dev/null
  fi
}

FIXTURE_PID= ENDPOINT=
start_fixture() {  # [fixture flags...]
  "$FIXTURE_BIN" --repo bench/store --file config.json:613 --file tokenizer.json:4099 \
    --xet-file "model.gguf:$STORE_SIZE" --ranges-per-url 100000 \
    --update-percent "$STORE_UPDATE_PERCENT" "$@" >"$WORK/fixture.log" &
  FIXTURE_PID=$!
  PIDS+=("$FIXTURE_PID")
  until grep -q '^endpoint' "$WORK/fixture.log" 2>/dev/null; do sleep 0.1; done
  ENDPOINT=$(awk '/^endpoint/ {print $2}' "$WORK/fixture.log")
}
stop_fixture() { kill "$FIXTURE_PID" 2>/dev/null || true; wait "$FIXTURE_PID" 2>/dev/null || true; }
xet_bytes() { fixture_xet_bytes "$1" "$FIXTURE_PID" "$WORK/fixture.log"; }

HIVE_PID= HIVE_URL=
start_hive() {  # binary cache
  "$1" --port 0 --cache-dir "$2" --disk-reserve-mb 0 2>"$2.log" &
  HIVE_PID=$!
  PIDS+=("$HIVE_PID")
  until grep -q 'Listening on' "$2.log" 2>/dev/null; do sleep 0.05; done
  HIVE_URL=http://127.0.0.1:$(sed -n 's/.*Listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$2.log" | head -1)
}
stop_hive() { kill "$HIVE_PID" 2>/dev/null || true; wait "$HIVE_PID" 2>/dev/null || true; }
run_job() {  # json body
  local job last
  job=$(curl -sf -X POST "$HIVE_URL/v1/jobs" -H 'Content-Type: application/json' -d "$1" |
    sed 's/.*"job_id":"\([^"]*\)".*/\1/')
  last=$(curl -sN "$HIVE_URL/v1/jobs/$job/stream" | grep '^data: \[' | tail -1)
  [[ $last == "data: [DONE]" ]] || { log "job failed: $last"; exit 1; }
}
metric() { curl -sf "$HIVE_URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# One hive's update: revision 1 (not timed), then revision 2 timed. Prints
# "<seconds> <xet bytes> <network bytes the hive counted> <disk bytes of the model folder>".
update_with() {  # binary name [fixture flags...]
  local cache=$WORK/cache-$2
  rm -rf "$cache" "$cache.log"
  start_fixture "${@:3}"
  HF_ENDPOINT=$ENDPOINT HF_HOME=$WORK/hf start_hive "$1" "$cache"
  run_job '{"operation":"model_download","model":"bench/store"}'
  local b0 n0 start seconds b1 n1
  b0=$(xet_bytes USR1)
  until grep -q '^revision 2' "$WORK/fixture.log"; do sleep 0.1; done
  n0=$(metric rbee_download_bytes_total)
  start=$(now)
  run_job '{"operation":"model_download","model":"bench/store"}'
  seconds=$(since "$start")
  b1=$(xet_bytes USR2)
  n1=$(metric rbee_download_bytes_total)
  stop_hive
  stop_fixture
  echo "$seconds $((b1 - b0)) $(awk -v a="$n0" -v b="$n1" 'BEGIN {printf "%.0f", b - a}') $(du -sb "$cache"/models--*/blobs 2>/dev/null | cut -f1)"
}

js_update() {  # prints "<seconds> <xet bytes>"
  start_fixture
  kill -USR1 "$FIXTURE_PID"
  until grep -q '^revision 2' "$WORK/fixture.log"; do sleep 0.1; done
  local b0 seconds b1
  b0=$(xet_bytes USR2)
  seconds=$(node "$ROOT/bench/tools/js_xet_download.mjs" "$ENDPOINT" bench/store model.gguf main \
    "$WORK/js-model.gguf" | tail -1)
  b1=$(xet_bytes USR2)
  rm -f "$WORK/js-model.gguf"
  stop_fixture
  echo "$seconds $((b1 - b0))"
}

# MODELS entries, each with 3 ready revisions of 3 files (as the store writes them).
write_catalog() {  # cache
  local i r commit
  for i in $(seq -w 1 "$MODELS"); do
    local folder=$1/models--org$i--model
    mkdir -p "$folder/snapshots"
    {
      printf 'schema: 2\nid: "org%s/model"\nsource: "huggingface"\nendpoint: "https://huggingface.co"\n' "$i"
      printf 'revision: "main"\ncommit: "%s"\npath: "%s/snapshots/%s"\nstatus: "ready"\n' \
        "$(printf 'c%039d' 3)" "$folder" "$(printf 'c%039d' 3)"
      printf 'bytes_done: 4096\nbytes_total: 4096\nprogress: 1\nsize: 4096\nerror: ""\nfiles: []\n'
      printf 'refs:\n  main: "%s"\nrevisions:\n' "$(printf 'c%039d' 3)"
      for r in 1 2 3; do
        commit=$(printf 'c%039d' "$r")
        printf '  - commit: "%s"\n    status: "ready"\n    size: 4096\n    error: ""\n' "$commit"
        printf '    added_at: "2026-12-01T10:00:0%s.000Z"\n    files:\n' "$r"
        for f in config.json tokenizer.json model.gguf; do
          printf '      - path: "%s"\n        size: 1365\n        sha256: "%064d"\n        etag: ""\n' "$f" "$r"
          printf '        state: "verified"\n        blob: "%s/blobs/%064d"\n' "$folder" "$r"
        done
      done
      printf 'added_at: "2026-12-01T10:00:00.000Z"\nupdated_at: "2026-12-01T10:00:03.000Z"\n'
      printf 'last_job_id: "job-bench"\n'
    } >"$folder/metadata.yaml"
  done
}

mkdir -p "$WORK" "$RESULTS"
build
log "update: a 3-file model, $((STORE_SIZE / 1048576)) MiB GGUF with ${STORE_UPDATE_PERCENT}% of its chunks changed"
read -r store_s store_xet store_net store_disk <<<"$(update_with "$HIVE_BIN" store)"
log "  store: $store_s s, xet bytes $store_xet, network $store_net, disk $store_disk"
baseline_row="| the hive before the store ($STORE_BASELINE_REF, in place) | (not built) | | | |"
if [[ -n $BASELINE_BIN ]]; then
  read -r base_s base_xet base_net base_disk <<<"$(update_with "$BASELINE_BIN" baseline)"
  log "  in place: $base_s s, xet bytes $base_xet, network $base_net, disk $base_disk"
  baseline_row="| the hive before the store ($STORE_BASELINE_REF, in place) | $base_s s | $base_xet | $base_net | (no blobs: one revision, $(du -sb "$WORK/cache-baseline" | cut -f1) bytes in all) |"
fi
read -r js_s js_xet <<<"$(js_update)"
log "  JS client: $js_s s, xet bytes $js_xet"
log "update: only config.json changes (two revisions that share all but one file)"
read -r small_s _ small_net small_disk <<<"$(update_with "$HIVE_BIN" small --update-only config.json)"
log "  store: $small_s s, network $small_net, blobs $small_disk"

log "model_list with $MODELS models of 3 revisions"
rm -rf "$WORK/catalog"
write_catalog "$WORK/catalog"
start_hive "$HIVE_BIN" "$WORK/catalog"
start=$(now)
run_job '{"operation":"model_list"}'
list_s=$(since "$start")
start=$(now)
count=$(curl -sf "$HIVE_URL/v1/models" | grep -o '"id":"org[0-9]*/model"' | wc -l)
get_s=$(since "$start")
rss=$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$HIVE_PID/status")
stop_hive
log "  $count models: model_list $list_s s, GET /v1/models $get_s s, peak RSS $rss"

two_copies=$((2 * (STORE_SIZE + 613 + 4099)))
{
  echo "# The store (DESIGN §16): price and payoff"
  echo
  echo "\`bash bench/store.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d); STORE_SIZE=$STORE_SIZE,"
  echo "STORE_UPDATE_PERCENT=$STORE_UPDATE_PERCENT; one run each (the fixture on loopback)."
  echo
  echo "Update of a 3-file model (two regular files unchanged, a Xet GGUF with ${STORE_UPDATE_PERCENT}% of its chunks changed), revision 1 on disk:"
  echo
  echo "| tool | wall | xorb bytes fetched | network bytes (hive's count) | blobs on disk after |"
  echo "|---|---|---|---|---|"
  echo "| rbee-hive (the store: new blob + snapshot, ref moved last) | $store_s s | $store_xet | $store_net | $store_disk (both revisions: the GGUF changed, so it is two blobs) |"
  echo "$baseline_row"
  echo "| @huggingface/hub downloadFile of the changed GGUF | $js_s s | $js_xet | | |"
  echo
  echo "Two revisions that share all but one file (revision 2 changes config.json only): the update took $small_s s and $small_net network bytes; both revisions take $small_disk bytes of blobs (two full copies: $two_copies)."
  echo
  echo "model_list with $count models of 3 revisions each: the job $list_s s (submit to [DONE]), GET /v1/models $get_s s, peak RSS $rss."
} >"$RESULTS/store.md"
cat "$RESULTS/store.md"
