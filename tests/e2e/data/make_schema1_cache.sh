#!/usr/bin/env bash
# Writes tests/e2e/data/schema1-cache: what the last hive before the store (schema 1; bd97371,
# whose layout is ddd6752's) leaves after downloading acme/legacy from rbee-hub-fixture. Run once
# by hand; the result is committed, so the tests need no old hive.
#
#   bash tests/e2e/data/make_schema1_cache.sh <old rbee-hive> <rbee-hub-fixture>
set -euo pipefail
old_hive=$1 fixture=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$fixture" --repo acme/legacy --lfs-file model.gguf:70001 --file config.json:613 \
  --file tokenizer/tokenizer.json:700 >"$work/fixture.log" &
until grep -q '^endpoint' "$work/fixture.log" 2>/dev/null; do sleep 0.1; done
HF_ENDPOINT=$(awk '/^endpoint/ {print $2}' "$work/fixture.log") HF_HOME=$work/hf \
  "$old_hive" --port 0 --cache-dir "$work/models" 2>"$work/hive.log" &
until grep -q 'Listening on' "$work/hive.log" 2>/dev/null; do sleep 0.05; done
url=http://127.0.0.1:$(sed -n 's/.*Listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$work/hive.log" | head -1)
job=$(curl -sf -X POST "$url/v1/jobs" -H 'Content-Type: application/json' \
  -d '{"operation":"model_download","model":"acme/legacy"}' | sed 's/.*"job_id":"\([^"]*\)".*/\1/')
curl -sN "$url/v1/jobs/$job/stream" | grep -q '^data: \[DONE\]'
rm -rf "$here/schema1-cache"
mkdir -p "$here/schema1-cache"
cp -r "$work/models/acme" "$here/schema1-cache/"  # the model; the locks stay behind
find "$here/schema1-cache" -type f | sort
