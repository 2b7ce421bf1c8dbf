#!/usr/bin/env bash
# The benchmark harness (bench/README.md): rbee-hive against curl, wget, aria2c and the official
# JS client (@huggingface/hub), all
# downloading the same bytes from the same nginx serving a static Hub mirror on loopback.
# Installs what it needs (Debian), builds Release, generates data, runs every scenario with the
# tools alternating, and writes bench/results/results.md and bench/results/chart.png.
#
#   bash bench/run.sh            # REPS=3 by default; BENCH_WORK=/tmp/rbee-bench holds the data
#   ONLY="3 3_remote" REPS=1 bash bench/run.sh   # some scenarios, samples in the log only
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
RESULTS=$ROOT/bench/results
WORK=${BENCH_WORK:-/tmp/rbee-bench}
REPS=${REPS:-3}
GIB=$((1024 * 1024 * 1024))
SIZE_LARGE=${SIZE_LARGE:-$((2 * GIB))}  # scenarios 1, 1u and 2
BASELINE_REF=${BASELINE_REF-35dc953}    # the hive before the libcurl client, in scenario 3r
SIZE_HUGE=${SIZE_HUGE:-$((8 * GIB))}    # scenario 4
CAP=${CAP:-50m}                         # nginx limit_rate per connection, scenario 2
FIXED_COUNTS=${FIXED_COUNTS:-"2 4 8 16 32"}  # the hive's fixed connection counts, scenario 1u
SLOW_CAPS=${SLOW_CAPS:-"300k 5m 50m"}   # nginx limit_rate per connection, scenario 2s
SLOW_SIZE=${SLOW_SIZE:-$((230 * 1024 * 1024))}  # scenario 2s's file
SLOW_FIXED_COUNTS=${SLOW_FIXED_COUNTS:-"8 16"}  # the fixed counts scenario 2s compares with
PORT_SLOW=18090                         # scenario 2s: one server per cap, from this port up
PORT_FAST=18080
PORT_CAPPED=18081
PORT_REMOTE=18082                       # latency_proxy.mjs in front of PORT_FAST, scenario 3r
PORT_UPSTREAM=18083                     # capped like PORT_CAPPED, logging bytes sent: scenario 8
PORT_TLS=18084                          # nginx with TLS and HTTP/2, scenario 3h
PORT_TLS_REMOTE=18085                   # latency_proxy.mjs in front of PORT_TLS, scenario 3h
FLEET_REPO=${FLEET_REPO:-onegig}        # the model of scenario 8 (1 GiB)
RTT_MS=${RTT_MS:-20}
SLOW_CLIENTS=${SLOW_CLIENTS:-1500}         # slowloris connections, scenario 5s
FILES=${FILES:-16}                      # the hive's files at once in scenario 3, like aria2c -j16
MANY_FILES=${MANY_FILES:-100000}        # small files of the repo of scenario 6
MODELS=${MODELS:-1000}                  # catalog entries of scenario 7
COMMIT=0123456789abcdef0123456789abcdef01234567
SUDO=$([[ $EUID -eq 0 ]] && echo "" || echo sudo)
PIDS=()

trap kill_started_processes EXIT

install_tools() {
  bash "$ROOT/scripts/install-deps.sh"
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v aria2c >/dev/null || missing+=(aria2)
  command -v curl >/dev/null || missing+=(curl)
  command -v wget >/dev/null || missing+=(wget)
  command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
  [[ -x /usr/bin/time ]] || missing+=(time)  # GNU time: CPU seconds of each peer tool
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [[ ! -d $ROOT/bench/tools/node_modules/@huggingface/hub ]]; then
    log "installing @huggingface/hub (bench/tools/package-lock.json)"
    npm ci --prefix "$ROOT/bench/tools" --no-audit --no-fund --loglevel=error >/dev/null
  fi
}

build_release() {
  log "building Release"
  cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$ROOT/build-release" -j2 --target rbee-hive >/dev/null
  HIVE_BIN=$ROOT/build-release/hive/rbee-hive
}

# The hive as it was before the libcurl client (DESIGN §14), for "faster than today's hive":
# BASELINE_REF built once from a git worktree in $WORK/baseline; BASELINE_REF= skips it.
build_baseline() {
  BASELINE_BIN=
  [[ -n $BASELINE_REF ]] || return 0
  local tree=$WORK/baseline/src-$BASELINE_REF
  if [[ ! -x $WORK/baseline/build-$BASELINE_REF/hive/rbee-hive ]]; then
    log "building the baseline hive ($BASELINE_REF)"
    rm -rf "$tree"
    mkdir -p "$WORK/baseline"
    git -C "$ROOT" worktree add -f --detach "$tree" "$BASELINE_REF" >/dev/null 2>&1 ||
      git -C "$ROOT" archive "$BASELINE_REF" | { mkdir -p "$tree" && tar -x -C "$tree"; }
    ln -sfn "$ROOT/../shared" "$WORK/baseline/shared" 2>/dev/null || true
    cmake -S "$tree" -B "$WORK/baseline/build-$BASELINE_REF" -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$WORK/baseline/build-$BASELINE_REF" -j2 --target rbee-hive >/dev/null
  fi
  BASELINE_BIN=$WORK/baseline/build-$BASELINE_REF/hive/rbee-hive
}

# ---- data: a static Hub mirror (api listing + resolve paths) -------------------------------

random_file() {  # path size
  mkdir -p "$(dirname "$1")"
  [[ -f $1 && $(stat -c %s "$1") -eq $2 ]] && return
  head -c "$2" /dev/urandom >"$1"
}

# Writes api/models/bench/<repo>/revision/main for the files under bench/<repo>/resolve/main.
write_listing() {  # repo
  local repo=$1 dir
  dir=$(repo_dir "$1")
  local listing=$WORK/www/api/models/bench/$repo/revision/main
  mkdir -p "$(dirname "$listing")"
  {
    printf '{"id":"bench/%s","sha":"%s","siblings":[' "$repo" "$COMMIT"
    local first=1
    while IFS= read -r file; do
      local path=${file#"$dir"/} size
      size=$(stat -c %s "$file")
      ((first)) || printf ','
      first=0
      if ((size >= 10 * 1024 * 1024)); then
        printf '{"rfilename":"%s","size":%d,"lfs":{"sha256":"%s","size":%d}}' \
          "$path" "$size" "$(sha256sum "$file" | cut -d' ' -f1)" "$size"
      else
        printf '{"rfilename":"%s","size":%d,"blobId":"%s"}' "$path" "$size" "$(git hash-object "$file")"
      fi
    done < <(find "$dir" -type f ! -name .complete | sort)
    printf ']}'
  } >"$listing"
}

# Files live under resolve/<commit> (the hive resolves by commit, as huggingface_hub does);
# resolve/main links there (curl, wget and aria2c ask for main).
repo_dir() {  # repo
  local dir=$WORK/www/bench/$1/resolve
  mkdir -p "$dir/$COMMIT"
  [[ -L $dir/main ]] || ln -s "$COMMIT" "$dir/main"
  echo "$dir/$COMMIT"
}

make_data() {
  log "generating data in $WORK (reused when present)"
  mkdir -p "$WORK/www"
  for repo in large onegig huge many halves slow; do repo_dir "$repo" >/dev/null; done
  random_file "$WORK/www/bench/large/resolve/main/model.gguf" "$SIZE_LARGE"
  random_file "$WORK/www/bench/halves/resolve/main/part-1.gguf" $((GIB / 2))
  random_file "$WORK/www/bench/halves/resolve/main/part-2.gguf" $((GIB / 2))
  random_file "$WORK/www/bench/slow/resolve/main/model.gguf" "$SLOW_SIZE"
  random_file "$WORK/www/bench/onegig/resolve/main/model.gguf" "$GIB"
  random_file "$WORK/www/bench/huge/resolve/main/model.gguf" "$SIZE_HUGE"
  local many
  many=$(repo_dir many)
  if [[ ! -f $many/.complete ]]; then
    for i in $(seq -w 1 200); do random_file "$many/shards/file-$i.json" $((1024 + RANDOM % 65536)); done
    for q in Q4_K_M Q5_K_M Q8_0; do random_file "$many/model.$q.gguf" $((64 * 1024 * 1024)); done
    touch "$many/.complete"
  fi
  for repo in large onegig huge many halves slow; do
    [[ -f $WORK/www/api/models/bench/$repo/revision/main ]] || write_listing "$repo"
  done
  if [[ ! -f $WORK/www/bench/tiny$MANY_FILES/.complete ]]; then
    log "  writing $MANY_FILES small files (once)"
    node "$ROOT/bench/tools/many_files.mjs" "$WORK/www" "tiny$MANY_FILES" "$COMMIT" "$MANY_FILES"
    touch "$WORK/www/bench/tiny$MANY_FILES/.complete"
  fi
  # The JS client lists the tree and asks paths-info for every file.
  [[ -f $WORK/www/api/models/bench/many/tree/$COMMIT ]] ||
    node "$ROOT/bench/tools/mirror_api.mjs" "$WORK/www" bench/many "$COMMIT" >/dev/null
  # aria2c's input list for the repo scenario: every file with its path.
  : >"$WORK/many.list"
  while IFS= read -r file; do
    local path=${file#"$many"/}
    printf 'http://127.0.0.1:%d/bench/many/resolve/main/%s\n  out=%s\n' "$PORT_FAST" "$path" "$path" >>"$WORK/many.list"
  done < <(find "$many/" -type f ! -name '.complete' | sort)
}

# Scenario 2s's servers: one per cap of SLOW_CAPS, on PORT_SLOW, PORT_SLOW + 1, …
slow_servers() {
  local port=$PORT_SLOW cap
  for cap in $SLOW_CAPS; do
    printf '  server {\n    listen 127.0.0.1:%d;\n    root %s;\n    limit_rate %s;\n' "$port" "$WORK/www" "$cap"
    printf '    location /api/ { default_type application/json; }\n'
    printf '    location / { add_header X-Repo-Commit %s; }\n  }\n' "$COMMIT"
    port=$((port + 1))
  done
}

# A CA and a certificate for 127.0.0.1, for scenario 3h's TLS server (made once).
make_certificates() {
  local d=$WORK/tls
  [[ -f $d/server.pem ]] && return
  mkdir -p "$d"
  printf 'subjectAltName=IP:127.0.0.1\n' >"$d/san.ext"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" \
    -subj "/CN=rbee bench CA" -days 365 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/server.key" -out "$d/server.csr" \
    -subj "/CN=127.0.0.1" 2>/dev/null
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/server.pem" -days 365 -extfile "$d/san.ext" 2>/dev/null
}

start_nginx() {
  make_certificates
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
$([[ $EUID -eq 0 ]] && echo "user root;")
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types { }
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$PORT_FAST;
    root $WORK/www;
    location /api/ { default_type application/json; }
    location / { add_header X-Repo-Commit $COMMIT; }
  }
  server {
    listen 127.0.0.1:$PORT_CAPPED;
    root $WORK/www;
    limit_rate $CAP;
    location /api/ { default_type application/json; }
    location / { add_header X-Repo-Commit $COMMIT; }
  }
$(slow_servers)
  # Scenario 3h: a Hub over TLS and HTTP/2, logging each request's connection.
  log_format connection '\$connection \$request_uri';
  server {
    listen 127.0.0.1:$PORT_TLS ssl http2;
    ssl_certificate $WORK/tls/server.pem;
    ssl_certificate_key $WORK/tls/server.key;
    root $WORK/www;
    access_log $WORK/nginx/tls.log connection;
    location /api/ { default_type application/json; }
    location / { add_header X-Repo-Commit $COMMIT; }
  }
  # The fleet's Hub (scenario 8): a CDN's per-connection cap, and every byte it sends logged.
  log_format sent '\$bytes_sent';
  server {
    listen 127.0.0.1:$PORT_UPSTREAM;
    root $WORK/www;
    limit_rate $CAP;
    access_log $WORK/nginx/upstream.log sent;
    location /api/ { default_type application/json; }
    location / { add_header X-Repo-Commit $COMMIT; }
  }
}
EOF
  nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
  PIDS+=($!)
  until curl -sf "http://127.0.0.1:$PORT_FAST/api/models/bench/large/revision/main" >/dev/null; do sleep 0.1; done
}

# ---- tools --------------------------------------------------------------------------------

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

HIVE_PID=
HIVE_URL=
HIVE_CACHE=${HIVE_CACHE_DIR:-$WORK/hive-cache}  # HIVE_CACHE_DIR: another file system (scenario 9 on XFS)
start_hive() {  # endpoint_port [daemon flags...]
  stop_hive
  rm -rf "$HIVE_CACHE" "$HIVE_CACHE.log"
  HF_ENDPOINT=${HIVE_SCHEME:-http}://127.0.0.1:$1 HF_HOME=$WORK/hf "$HIVE_BIN" --port 0 --cache-dir "$HIVE_CACHE" \
    --disk-reserve-mb 0 "${@:2}" 2>"$HIVE_CACHE.log" &
  HIVE_PID=$!
  PIDS+=("$HIVE_PID")
  until grep -q 'Listening on' "$HIVE_CACHE.log" 2>/dev/null; do sleep 0.05; done
  HIVE_URL=http://127.0.0.1:$(sed -n 's/.*Listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$HIVE_CACHE.log" | head -1)
}
stop_hive() {
  [[ -n $HIVE_PID ]] && kill "$HIVE_PID" 2>/dev/null && wait "$HIVE_PID" 2>/dev/null || true
  HIVE_PID=
}

submit_download() {  # json-extra → job id
  curl -sf -X POST "$HIVE_URL/v1/jobs" -H 'Content-Type: application/json' \
    -d "{\"operation\":\"model_download\",$1}" | sed 's/.*"job_id":"\([^"]*\)".*/\1/'
}
wait_done() {  # job id
  local last
  last=$(curl -sN "$HIVE_URL/v1/jobs/$1/stream" | grep '^data: \[' | tail -1)
  [[ $last == "data: [DONE]" ]] || { log "hive job failed: $last"; tail -5 "$HIVE_CACHE.log" >&2; exit 1; }
}
# Every *_time prints "<wall seconds> <CPU seconds>": CPU is user + system of the whole tool
# (the hive's process, hashing and every thread included; a peer tool and its children).
CLOCK_TICKS=$(getconf CLK_TCK)
process_cpu() { awk -v hz="$CLOCK_TICKS" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
hive_time() {  # json-extra
  rm -rf "$HIVE_CACHE"/models--bench--*  # the store's folders (DESIGN §16): every run from zero
  local start job cpu
  cpu=$(process_cpu "$HIVE_PID")
  start=$(now)
  job=$(submit_download "$1")
  wait_done "$job"
  echo "$(since "$start") $(awk -v a="$cpu" -v b="$(process_cpu "$HIVE_PID")" 'BEGIN {printf "%.2f", b - a}')"
}
timed() {  # command...: runs it, prints wall and CPU seconds
  local s
  s=$(now)
  /usr/bin/time -f '%U %S' -o "$WORK/cpu.txt" "$@" >/dev/null || return 1
  echo "$(since "$s") $(awk '{printf "%.2f", $1 + $2}' "$WORK/cpu.txt")"
}
fresh_out() { rm -rf "$WORK/out"; mkdir -p "$WORK/out"; }
curl_time() { fresh_out; timed curl -sf -o "$WORK/out/f" "$1"; }
curl_verified_time() {  # what the hive does, with curl: download, hash, make durable
  fresh_out
  timed sh -c 'curl -sf -o "$1" "$2" && sha256sum "$1" >/dev/null && sync "$1"' sh "$WORK/out/f" "$1"
}
curl_synced_time() {  # the target of DESIGN §8: curl -o, then sync
  fresh_out
  timed sh -c 'curl -sf -o "$1" "$2" && sync "$1"' sh "$WORK/out/f" "$1"
}
hash_time() {  # OpenSSL's SHA-256 (the hive's) of the file curl just wrote, from the page cache
  timed openssl dgst -sha256 "$WORK/out/f"
}
wget_time() { fresh_out; timed wget -q -O "$WORK/out/f" "$1"; }
js_time() {  # repo [port]: the official JS client's snapshotDownload, one file after another
  rm -rf "$WORK/js-cache"
  local wall
  wall=$(/usr/bin/time -f '%U %S' -o "$WORK/cpu.txt" \
    node "$ROOT/bench/tools/js_snapshot.mjs" "http://127.0.0.1:${2:-$PORT_FAST}" "$1" "$WORK/js-cache" | tail -1)
  echo "$wall $(awk '{printf "%.2f", $1 + $2}' "$WORK/cpu.txt")"
}
aria_time() {  # args...
  fresh_out
  timed aria2c -q -d "$WORK/out" --allow-overwrite=true --auto-file-renaming=false --file-allocation=none "$@"
}

# ---- measurement bookkeeping ---------------------------------------------------------------

declare -A SAMPLES CPU_SAMPLES
record() {  # key "wall cpu"
  [[ -n $2 ]] || { log "no measurement for $1"; exit 1; }  # the tool failed in a subshell
  local wall cpu
  read -r wall cpu <<<"$2"
  SAMPLES[$1]+="$wall "
  CPU_SAMPLES[$1]+="${cpu:-0} "
  log "  $1: $wall s, CPU $cpu s"
}
mbps() { awk -v s="$1" -v t="$2" 'BEGIN {printf "%.0f", s / 1048576 / t}'; }

scenario_1() {
  log "scenario 1: one $((SIZE_LARGE / 1048576)) MiB file, one connection, to disk"
  start_hive $PORT_FAST
  local url=http://127.0.0.1:$PORT_FAST/bench/large/resolve/main/model.gguf
  for _ in $(seq "$REPS"); do
    record s1_hive "$(hive_time '"model":"bench/large","connections":1')"
    record s1_curl "$(curl_time "$url")"
    record s1_curl_synced "$(curl_synced_time "$url")"
    record s1_hash "$(hash_time)"
    record s1_wget "$(wget_time "$url")"
    record s1_curl_verified "$(curl_verified_time "$url")"
  done
}

scenario_1u() {
  log "scenario 1u: the same file uncapped, the hive at its defaults against each fixed count"
  local url=http://127.0.0.1:$PORT_FAST/bench/large/resolve/main/model.gguf n
  for _ in $(seq "$REPS"); do
    start_hive $PORT_FAST
    record s1u_hive "$(hive_time '"model":"bench/large"')"
    for n in $FIXED_COUNTS; do
      start_hive $PORT_FAST --fixed-connections --connections "$n"
      record "s1u_fixed$n" "$(hive_time '"model":"bench/large"')"
    done
    record s1u_aria2c "$(aria_time -x16 -s16 -k1M -o f "$url")"
  done
  stop_hive
}

# Durable at the speed of non-durable (DESIGN §8): 1 GiB in 2 files, uncapped. The hive at its
# defaults (verified, fsynced before the publish) against curl -o of both files one after the
# other without sync (the target) and with it; the hive's timeline of the last run.
scenario_1d() {
  log "scenario 1d: 1 GiB in 2 files, uncapped: the hive (verified, durable) vs curl -o without sync"
  local base=http://127.0.0.1:$PORT_FAST/bench/halves/resolve/main
  local both='curl -sf -o "$1/a" "$2/part-1.gguf" && curl -sf -o "$1/b" "$2/part-2.gguf"'
  local n
  for _ in $(seq "$REPS"); do
    for n in ${DURABLE_FIXED_COUNTS:-}; do  # for context: the hive at fixed counts
      start_hive $PORT_FAST --fixed-connections --connections "$n"
      record "s1d_fixed$n" "$(hive_time '"model":"bench/halves"')"
    done
    start_hive $PORT_FAST --log-level debug
    record s1d_hive "$(hive_time '"model":"bench/halves"')"
    record s1d_curl "$(fresh_out && timed sh -c "$both" sh "$WORK/out" "$base")"
    record s1d_curl_synced "$(fresh_out && timed sh -c "$both && sync" sh "$WORK/out" "$base")"
  done
  log "  the hive's last run: $(grep -o 'part-[12].gguf: last byte.*' "$HIVE_CACHE.log" | tail -2 | tr '\n' ' ')"
  stop_hive
}

# The adaptive count at any per-connection cap (DESIGN §8): for each cap of SLOW_CAPS, the hive
# at its defaults against itself at each of SLOW_FIXED_COUNTS. Caps under 1 MB/s download the
# SLOW_SIZE file (else a run takes many minutes), the others scenario 1's SIZE_LARGE file: nginx
# sends a connection's first second at once, and on a small file those bursts are the download.
scenario_2s() {
  local port=$PORT_SLOW cap n repo
  for cap in $SLOW_CAPS; do
    repo=large
    [[ $cap == *k ]] && repo=slow
    log "scenario 2s: bench/$repo at $cap per connection"
    for _ in $(seq "$REPS"); do
      start_hive "$port"
      record "s2s_${cap}_hive" "$(hive_time "\"model\":\"bench/$repo\"")"
      log "    $(grep -o 'download_connections.*' "$HIVE_CACHE.log" | tail -1)"
      for n in $SLOW_FIXED_COUNTS; do
        start_hive "$port" --fixed-connections --connections "$n"
        record "s2s_${cap}_fixed$n" "$(hive_time "\"model\":\"bench/$repo\"")"
      done
    done
    port=$((port + 1))
  done
  stop_hive
}

scenario_2() {
  log "scenario 2: the same file, $CAP per connection"
  start_hive $PORT_CAPPED
  local url=http://127.0.0.1:$PORT_CAPPED/bench/large/resolve/main/model.gguf
  for _ in $(seq "$REPS"); do
    record s2_hive "$(hive_time '"model":"bench/large"')"
    record s2_aria2c "$(aria_time -x16 -s16 -k1M -o f "$url")"
  done
  record s2_curl "$(curl_time "$url")"  # one run: it is the slow baseline
}

scenario_3() {
  log "scenario 3: a repo of 200 small files and 3 GGUFs of 64 MiB"
  start_hive $PORT_FAST
  for _ in $(seq "$REPS"); do
    record s3_hive "$(hive_time '"model":"bench/many"')"
    record s3_aria2c "$(aria_time -j16 -i "$WORK/many.list")"
    record s3_js "$(js_time bench/many)"
  done
}

scenario_3_remote() {
  log "scenario 3r: the same repo with a ${RTT_MS} ms round trip (latency_proxy.mjs)"
  node "$ROOT/bench/tools/latency_proxy.mjs" "$PORT_REMOTE" "$PORT_FAST" "$RTT_MS" >/dev/null &
  local proxy=$!
  PIDS+=("$proxy")
  until curl -sf "http://127.0.0.1:$PORT_REMOTE/api/models/bench/many/revision/main" >/dev/null; do sleep 0.1; done
  sed "s/:$PORT_FAST\//:$PORT_REMOTE\//" "$WORK/many.list" >"$WORK/many-remote.list"
  # The hive before §14 runs beside this one (its own cache and port), tuned as its bench ran it.
  local before_pid= before_url=
  if [[ -n $BASELINE_BIN ]]; then
    HIVE_BIN=$BASELINE_BIN HIVE_CACHE=$WORK/baseline-cache start_hive $PORT_REMOTE --parallel-files "$FILES"
    before_pid=$HIVE_PID before_url=$HIVE_URL HIVE_PID=
  fi
  start_hive $PORT_REMOTE
  for _ in $(seq "$REPS"); do
    record s3r_hive "$(hive_time '"model":"bench/many"')"
    if [[ -n $before_pid ]]; then
      record s3r_before "$(HIVE_PID=$before_pid HIVE_URL=$before_url HIVE_CACHE=$WORK/baseline-cache \
        hive_time '"model":"bench/many","connections":'"$FILES")"
    fi
    record s3r_aria2c "$(aria_time -j16 -i "$WORK/many-remote.list")"
    record s3r_js "$(js_time bench/many $PORT_REMOTE)"
  done
  [[ -n $before_pid ]] && kill "$before_pid" && wait "$before_pid" 2>/dev/null
  stop_hive
  kill "$proxy"
}

# Many small files over one HTTP/2 connection (DESIGN §8): scenario 3's repo from nginx over TLS
# and HTTP/2, RTT_MS away (latency_proxy.mjs forwards the TLS bytes as they are): the hive against
# aria2c -j16, and the TCP connections each used for the small files (nginx's $connection).
scenario_3h() {
  log "scenario 3h: the repo of scenario 3 over TLS and HTTP/2, ${RTT_MS} ms round trip"
  node "$ROOT/bench/tools/latency_proxy.mjs" "$PORT_TLS_REMOTE" "$PORT_TLS" "$RTT_MS" >/dev/null &
  local proxy=$!
  PIDS+=("$proxy")
  until curl -sf --cacert "$WORK/tls/ca.pem" "https://127.0.0.1:$PORT_TLS_REMOTE/api/models/bench/many/revision/main" >/dev/null; do sleep 0.1; done
  sed "s|http://127.0.0.1:$PORT_FAST/|https://127.0.0.1:$PORT_TLS_REMOTE/|" "$WORK/many.list" >"$WORK/many-tls.list"
  awk '/^https/ {keep = /\/shards\//} keep' "$WORK/many-tls.list" >"$WORK/many-tls-small.list"
  local small='/shards/' tool
  connections_of() {  # the nginx log of one run → "requests for small files / their connections"
    awk -v small="$small" '$2 ~ small {n++; c[$1]} END {printf "%d requests over %d connections", n, length(c)}' "$WORK/nginx/tls.log"
  }
  RBEE_CA_BUNDLE=$WORK/tls/ca.pem HIVE_SCHEME=https start_hive $PORT_TLS_REMOTE ${H2_FLAGS:-}
  for _ in $(seq "$REPS"); do
    : >"$WORK/nginx/tls.log"
    record s3h_hive "$(hive_time '"model":"bench/many"')"
    log "    rbee-hive, small files: $(connections_of)"
    : >"$WORK/nginx/tls.log"
    record s3h_aria2c "$(aria_time -j16 --ca-certificate="$WORK/tls/ca.pem" -i "$WORK/many-tls.list")"
    log "    aria2c -j16, small files: $(connections_of)"
    # The 200 small files alone: the GGUFs' 192 MiB through the Node proxy weigh on the above.
    : >"$WORK/nginx/tls.log"
    record s3h_small_hive "$(hive_time '"model":"bench/many","include":["shards/*"]')"
    log "    rbee-hive, small files only: $(connections_of)"
    : >"$WORK/nginx/tls.log"
    record s3h_small_aria2c "$(aria_time -j16 --ca-certificate="$WORK/tls/ca.pem" -i "$WORK/many-tls-small.list")"
    log "    aria2c -j16, small files only: $(connections_of)"
  done
  stop_hive
  kill "$proxy"
}

scenario_4() {
  log "scenario 4: peak RSS of the hive for 1 GiB, $((SIZE_HUGE / GIB)) GiB, and scenario 2's file"
  for repo in onegig huge; do
    start_hive $PORT_FAST
    hive_time "\"model\":\"bench/$repo\"" >/dev/null
    RSS[$repo]=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$HIVE_PID/status")
    log "  $repo: peak RSS ${RSS[$repo]} MiB"
    stop_hive
  done
  start_hive $PORT_CAPPED  # the most connections the hive opens: a capped server
  hive_time '"model":"bench/large"' >/dev/null
  RSS[capped]=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$HIVE_PID/status")
  log "  capped, adaptive connections: peak RSS ${RSS[capped]} MiB"
  stop_hive
}

scenario_5() {
  log "scenario 5: /health and POST /v1/jobs latency during scenario 2 with 200 SSE watchers"
  start_hive $PORT_CAPPED
  rm -rf "$WORK/hive-cache/bench"
  local job
  job=$(submit_download '"model":"bench/large"')
  CONTROL=$(node "$ROOT/bench/tools/control_plane.mjs" "$HIVE_URL" "$job" 200 500)
  log "  $CONTROL"
  wait_done "$job"
}

scenario_5_slowloris() {
  log "scenario 5s: the same during a slowloris flood of $SLOW_CLIENTS connections"
  start_hive $PORT_CAPPED
  rm -rf "$WORK/hive-cache/bench"
  local job
  job=$(submit_download '"model":"bench/large"')
  # The flood runs in a process of its own, so it never delays the measuring client's event loop.
  node "$ROOT/bench/tools/slowloris.mjs" "$HIVE_URL" "$SLOW_CLIENTS" >"$WORK/slowloris.json" &
  local flood=$!
  sleep 3  # the flood at full strength before measuring
  CONTROL_SLOW=$(node "$ROOT/bench/tools/control_plane.mjs" "$HIVE_URL" "$job" 0 500)
  kill -TERM $flood && wait $flood || true
  CONTROL_SLOW="${CONTROL_SLOW%\}}, $(tr -d '{}' <"$WORK/slowloris.json")}"
  log "  $CONTROL_SLOW"
  wait_done "$job"
}

scenario_6() {
  log "scenario 6: a repo of $MANY_FILES small files: time, catalog writes, peak RSS"
  start_hive $PORT_FAST --parallel-files "$FILES"
  local seconds writes rss
  seconds=$(hive_time '"model":"bench/tiny'"$MANY_FILES"'"')
  # The peak of the download itself, before /metrics parses the 20 MB entry (yaml-cpp's nodes).
  rss=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$HIVE_PID/status")
  writes=$(curl -s "$HIVE_URL/metrics" | awk '/^rbee_catalog_writes_total/ {print $2}')
  MANY_RESULT=$(awk -v n="$MANY_FILES" -v t="$seconds" -v w="$writes" -v r="$rss" \
    'BEGIN {printf "%d files in %.1f s (%.0f files/s), %d catalog writes (%.1f/s), peak RSS %s MiB", n, t, n / t, w, w / t, r}')
  log "  $MANY_RESULT"
  stop_hive
}

scenario_7() {
  log "scenario 7: model_list and GET /v1/models with $MODELS models in the catalog"
  start_hive $PORT_FAST
  local template=$ROOT/catalog/SCHEMA.md i
  for i in $(seq -w 1 "$MODELS"); do
    mkdir -p "$WORK/hive-cache/models--org$i--model"
    sed -n '/^```yaml/,/^```/p' "$template" | sed '1d;$d' |
      sed "s|acme/tiny-chat-GGUF|org$i/model|; s|models--acme--tiny-chat-GGUF|models--org$i--model|g;
           s|/home/me/.cache/rbee/models|$WORK/hive-cache|g" \
        >"$WORK/hive-cache/models--org$i--model/metadata.yaml"
  done
  local start job list_s get_s count
  start=$(now)
  job=$(curl -sf -X POST "$HIVE_URL/v1/jobs" -H 'Content-Type: application/json' \
    -d '{"operation":"model_list"}' | sed 's/.*"job_id":"\([^"]*\)".*/\1/')
  wait_done "$job"
  list_s=$(since "$start")
  start=$(now)
  count=$(curl -sf "$HIVE_URL/v1/models" | grep -o '"id":"org[0-9]*/model"' | wc -l)
  get_s=$(since "$start")
  LIST_RESULT="$count models: model_list job $list_s s (submit to [DONE]), GET /v1/models $get_s s"
  log "  $LIST_RESULT"
  stop_hive
}

# Scenario 8, the fleet (DESIGN §13): four hives need the same model. Either each downloads it
# from the upstream alone, or hive A does and three peers download it from A's /hf mirror (A
# pulls it through once). Reported: the upstream's bytes (nginx's log) and the time until the
# last hive has it, beside one hive alone.
declare -A FLEET_PID FLEET_URL
fleet_start() {  # name endpoint_url
  local cache=$WORK/fleet-$1
  rm -rf "$cache" "$cache.log"
  HF_ENDPOINT=$2 HF_HOME=$WORK/hf "$HIVE_BIN" --port 0 --cache-dir "$cache" --disk-reserve-mb 0 \
    2>"$cache.log" &
  FLEET_PID[$1]=$!
  PIDS+=("${FLEET_PID[$1]}")
  until grep -q 'Listening on' "$cache.log" 2>/dev/null; do sleep 0.05; done
  FLEET_URL[$1]=http://127.0.0.1:$(sed -n 's/.*Listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$cache.log" | head -1)
}
fleet_stop() {
  local name
  for name in "${!FLEET_PID[@]}"; do kill "${FLEET_PID[$name]}" 2>/dev/null || true; wait "${FLEET_PID[$name]}" 2>/dev/null || true; done
  FLEET_PID=() FLEET_URL=()
  rm -rf "$WORK"/fleet-*
}
upstream_bytes() { awk '{s += $1} END {printf "%.0f", s}' "$WORK/nginx/upstream.log" 2>/dev/null || echo 0; }
# Submits the download to every named hive at once; prints "<seconds until the last is done>
# <upstream bytes>".
fleet_download() {  # names...
  : >"$WORK/nginx/upstream.log"
  local start name job last
  local -A jobs
  start=$(now)
  for name in "$@"; do
    jobs[$name]=$(curl -sf -X POST "${FLEET_URL[$name]}/v1/jobs" -H 'Content-Type: application/json' \
      -d "{\"operation\":\"model_download\",\"model\":\"bench/$FLEET_REPO\"}" | sed 's/.*"job_id":"\([^"]*\)".*/\1/')
  done
  local done_at=""
  for name in "$@"; do  # in order: the first hive's time is its own, the others' when they end
    last=$(curl -sN "${FLEET_URL[$name]}/v1/jobs/${jobs[$name]}/stream" | grep '^data: \[' | tail -1)
    [[ $last == "data: [DONE]" ]] || { log "fleet: $name failed: $last"; tail -5 "$WORK/fleet-$name.log" >&2; exit 1; }
    done_at+=" $name $(since "$start") s"
  done
  log "   done:$done_at"
  echo "$(since "$start") $(upstream_bytes)"
}

scenario_8() {
  log "scenario 8: the fleet, bench/$FLEET_REPO to 4 hives from an upstream capped at $CAP per connection"
  local upstream=http://127.0.0.1:$PORT_UPSTREAM result
  for _ in $(seq "$REPS"); do
    fleet_start solo "$upstream"
    result=$(fleet_download solo)
    record s8_single "${result% *} 0"
    FLEET_BYTES[single]=${result#* }
    fleet_stop
    for name in h1 h2 h3 h4; do fleet_start "$name" "$upstream"; done
    result=$(fleet_download h1 h2 h3 h4)
    record s8_independent "${result% *} 0"
    FLEET_BYTES[independent]=${result#* }
    fleet_stop
    fleet_start a "$upstream"
    for name in p1 p2 p3; do fleet_start "$name" "${FLEET_URL[a]}/hf"; done
    result=$(fleet_download a p1 p2 p3)
    record s8_fleet "${result% *} 0"
    FLEET_BYTES[fleet]=${result#* }
    log "  mirror metrics of A: $(curl -sf "${FLEET_URL[a]}/metrics" | grep -E '^rbee_mirror_(bytes_served|upstream_bytes|pulls)_total' | tr '\n' ' ')"
    fleet_stop
    log "  upstream bytes: single ${FLEET_BYTES[single]}, independent ${FLEET_BYTES[independent]}, fleet ${FLEET_BYTES[fleet]}"
  done
}

# ---- report --------------------------------------------------------------------------------

# Scenario 9 (DESIGN §15): a Xet file from the fixture's own Xet storage (bench/xet) natively,
# through the bridge (--xet=off), and with curl of the bridge URL; then revision 2 of the file,
# with XET_UPDATE_PERCENT of its chunks changed: what the hive fetches (network vs disk) and how
# long it takes, against the official JS client downloading revision 2.
XET_SIZE=${XET_SIZE:-$((2 * GIB))}
XET_UPDATE_PERCENT=${XET_UPDATE_PERCENT:-1}
build_fixture() {
  log "building the Hub fixture (Release)"
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ROOT/build-bench" -j2 --target rbee-hub-fixture >/dev/null
  FIXTURE_BIN=$ROOT/build-bench/tests/rbee-hub-fixture
}
xet_fixture_bytes() { fixture_xet_bytes "$1" "$XET_FIXTURE_PID" "$WORK/xet-fixture.log"; }
scenario_9() {
  build_fixture
  log "scenario 9: a $((XET_SIZE / GIB)) GiB Xet file, then revision 2 with ${XET_UPDATE_PERCENT}% of its chunks changed"
  # One presigned URL per xorb, all its ranges in it: the JS client (2.17.5) reads only the
  # first fetch entry of a xorb ("Download workers finished without producing data").
  "$FIXTURE_BIN" --repo bench/xet --xet-file "model.gguf:$XET_SIZE" --ranges-per-url 100000 \
    --update-percent "$XET_UPDATE_PERCENT" >"$WORK/xet-fixture.log" &
  XET_FIXTURE_PID=$!
  PIDS+=("$XET_FIXTURE_PID")
  until grep -q '^endpoint' "$WORK/xet-fixture.log" 2>/dev/null; do sleep 0.2; done
  local endpoint port
  endpoint=$(awk '/^endpoint/ {print $2}' "$WORK/xet-fixture.log")
  port=${endpoint##*:}
  local rep b0 b1
  for rep in $(seq "$REPS"); do
    start_hive "$port"
    b0=$(xet_fixture_bytes USR2)
    record s9_xet "$(hive_time '"model":"bench/xet"')"
    b1=$(xet_fixture_bytes USR2)
    XET_BYTES[native]=$((b1 - b0))
    start_hive "$port" --xet off
    record s9_bridge "$(hive_time '"model":"bench/xet"')"
    fresh_out
    record s9_curl "$(timed curl -sfL -o "$WORK/out/f" "$endpoint/bench/xet/resolve/main/model.gguf")"
  done
  # The update: revision 1 on disk (not timed), then the Hub moves main to revision 2.
  local job
  start_hive "$port"
  job=$(submit_download '"model":"bench/xet"')
  wait_done "$job"
  b0=$(xet_fixture_bytes USR1)
  until grep -q '^revision 2' "$WORK/xet-fixture.log"; do sleep 0.1; done
  local start cpu
  cpu=$(process_cpu "$HIVE_PID")
  start=$(now)
  job=$(submit_download '"model":"bench/xet"')
  wait_done "$job"
  record s9_update "$(since "$start") $(awk -v a="$cpu" -v b="$(process_cpu "$HIVE_PID")" 'BEGIN {printf "%.2f", b - a}')"
  b1=$(xet_fixture_bytes USR2)
  XET_BYTES[update]=$((b1 - b0))
  XET_REUSED=$(curl -sf "$HIVE_URL/metrics" | awk '/^rbee_download_reused_bytes_total/ {print $2}')
  grep -o 'Verified model.gguf[^"]*' "$HIVE_CACHE.log" | tail -1 >&2 || true
  # The official JS client fetching revision 2 (it keeps no chunks between runs).
  fresh_out
  b0=$(xet_fixture_bytes USR2)
  local wall
  wall=$(/usr/bin/time -f '%U %S' -o "$WORK/cpu.txt" node "$ROOT/bench/tools/js_xet_download.mjs" \
    "$endpoint" bench/xet model.gguf main "$WORK/out/f" | tail -1)
  record s9_update_js "$wall $(awk '{printf "%.2f", $1 + $2}' "$WORK/cpu.txt")"
  b1=$(xet_fixture_bytes USR2)
  XET_BYTES[update_js]=$((b1 - b0))
  log "  xet bytes: native ${XET_BYTES[native]}, update ${XET_BYTES[update]} (reused $XET_REUSED), JS update ${XET_BYTES[update_js]}"
  stop_hive
  kill "$XET_FIXTURE_PID" 2>/dev/null || true
}

report() {
  mkdir -p "$RESULTS"
  local m; declare -A M C
  for key in "${!SAMPLES[@]}"; do
    M[$key]=$(tr ' ' '\n' <<<"${SAMPLES[$key]}" | median)
    C[$key]=$(tr ' ' '\n' <<<"${CPU_SAMPLES[$key]}" | median)
  done
  cpu_per_gib() { awk -v c="${C[$1]}" -v b="$2" 'BEGIN {printf "%.2f", c / (b / 1073741824)}'; }
  cpu_ratio() { awk -v a="${C[$1]}" -v b="${C[$2]}" -v h="${C[$3]}" 'BEGIN {printf "%.2f", a / (b + h)}'; }
  local large_mib=$((SIZE_LARGE / 1048576))
  local many_bytes
  many_bytes=$(du -sbL "$WORK/www/bench/many/resolve/main" | cut -f1)
  field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$CONTROL"; }
  local best_fixed="" best_n=""
  for n in $FIXED_COUNTS; do
    if [[ -n ${M[s1u_fixed$n]:-} ]] && { [[ -z $best_fixed ]] || awk -v a="${M[s1u_fixed$n]}" -v b="$best_fixed" 'BEGIN {exit !(a < b)}'; }; then
      best_fixed=${M[s1u_fixed$n]}
      best_n=$n
    fi
  done
  # A row: label, tool, key, bytes, target text.
  row() {
    echo "| $1 | $2 | ${M[$3]} s | $(mbps "$4" "${M[$3]}") MiB/s | $(cpu_per_gib "$3" "$4") | $5 |"
  }
  {
    echo "# Benchmark results"
    echo
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM,"
    echo "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); loopback; nginx $(nginx -v 2>&1 | sed 's/.*\///'),"
    echo "aria2c $(aria2c --version | head -1 | awk '{print $3}'), curl $(curl --version | head -1 | awk '{print $2}'). Medians of $REPS runs, tools alternating."
    echo "The hive runs at its defaults unless a row says otherwise. CPU is user + system seconds of the whole"
    echo "process (the hive with its hashing; a peer tool with its children) per GiB downloaded."
    echo
    echo "| scenario | tool | median | throughput | CPU s/GiB | vs. target |"
    echo "|---|---|---|---|---|---|"
    row "1: ${large_mib} MiB, 1 connection" "rbee-hive (\`connections: 1\`, SHA-256 verified, fsync)" s1_hive $SIZE_LARGE "$(ratio "${M[s1_curl_synced]}" "${M[s1_hive]}")× the speed of curl -o then sync (target ≥ 1); CPU $(cpu_ratio s1_hive s1_curl_synced s1_hash)× curl + sync + the hash (target ≤ 1)"
    row "" "curl -o" s1_curl $SIZE_LARGE ""
    row "" "curl -o, then sync" s1_curl_synced $SIZE_LARGE ""
    row "" "SHA-256 of the file (\`openssl dgst\`, from the page cache)" s1_hash $SIZE_LARGE ""
    row "" "wget" s1_wget $SIZE_LARGE ""
    row "" "curl -o, then sha256sum and sync (like for like)" s1_curl_verified $SIZE_LARGE ""
    row "1u: ${large_mib} MiB, uncapped" "rbee-hive (adaptive)" s1u_hive $SIZE_LARGE "$(ratio "$best_fixed" "${M[s1u_hive]}")× the best fixed count's speed ($best_n connections; target ≥ 0.95)"
    for n in $FIXED_COUNTS; do
      row "" "rbee-hive, fixed $n connections" "s1u_fixed$n" $SIZE_LARGE ""
    done
    row "" "aria2c -x16 -s16" s1u_aria2c $SIZE_LARGE ""
    row "2: ${large_mib} MiB, $CAP/connection" "rbee-hive (adaptive)" s2_hive $SIZE_LARGE "$(ratio "${M[s2_aria2c]}" "${M[s2_hive]}")× aria2c (target > 1), $(ratio "${M[s2_curl]}" "${M[s2_hive]}")× one connection (≥ 8)"
    row "" "aria2c -x16 -s16" s2_aria2c $SIZE_LARGE ""
    row "" "curl (one connection, 1 run)" s2_curl $SIZE_LARGE ""
    row "3: 200 small files + 3×64 MiB" "rbee-hive" s3_hive "$many_bytes" "$(ratio "${M[s3_aria2c]}" "${M[s3_hive]}")× aria2c (≥ 1), $(ratio "${M[s3_js]}" "${M[s3_hive]}")× the JS client (≥ 4)"
    row "" "aria2c -j16 -i list" s3_aria2c "$many_bytes" ""
    row "" "@huggingface/hub $(node -p 'require(process.argv[1]).version' "$ROOT/bench/tools/node_modules/@huggingface/hub/package.json") snapshotDownload (not verified)" s3_js "$many_bytes" ""
    row "3r: the same, ${RTT_MS} ms round trip" "rbee-hive" s3r_hive "$many_bytes" "$(ratio "${M[s3r_aria2c]}" "${M[s3r_hive]}")× aria2c (> 1), ${M[s3r_before]:+$(ratio "${M[s3r_before]}" "${M[s3r_hive]}")× the hive before §14 (> 1), }$(ratio "${M[s3r_js]}" "${M[s3r_hive]}")× the JS client (≥ 4)"
    [[ -n ${M[s3r_before]:-} ]] && row "" "rbee-hive before §14 ($BASELINE_REF, cpp-httplib; 16 files and connections)" s3r_before "$many_bytes" ""
    row "" "aria2c -j16 -i list" s3r_aria2c "$many_bytes" ""
    row "" "@huggingface/hub snapshotDownload" s3r_js "$many_bytes" ""
    echo "| 4: peak RSS | rbee-hive, 1 GiB file | ${RSS[onegig]} MiB | | | target < 64 MiB, flat |"
    echo "| | rbee-hive, $((SIZE_HUGE / GIB)) GiB file | ${RSS[huge]} MiB | | | |"
    echo "| | rbee-hive, scenario 2 (most connections) | ${RSS[capped]:-} MiB | | | |"
    echo "| 5: control plane, $(field watchers) SSE watchers, during scenario 2 | GET /health | p50 $(field health_p50_ms) ms, p99 $(field health_p99_ms) ms | | | target p99 < 5 ms |"
    echo "| | POST /v1/jobs | p50 $(field submit_p50_ms) ms, p99 $(field submit_p99_ms) ms | | | |"
    local events_seen="between $(field watcher_events_min) and $(field watcher_events_max)"
    CONTROL=$CONTROL_SLOW
    echo "| 5s: control plane during a slowloris flood of $(field slow_clients) connections, during scenario 2 | GET /health | p50 $(field health_p50_ms) ms, p99 $(field health_p99_ms) ms | | | target p99 < 50 ms |"
    echo "| | POST /v1/jobs | p50 $(field submit_p50_ms) ms, p99 $(field submit_p99_ms) ms | | | |"
    echo "| 6: a repo of $MANY_FILES small files | rbee-hive ($FILES files at once) | $MANY_RESULT | | | catalog writes bounded per second |"
    echo "| 7: $MODELS models in the catalog | model_list, GET /v1/models | $LIST_RESULT | | | target < 1 s |"
    if [[ -n ${M[s8_fleet]:-} ]]; then
      local model_bytes
      model_bytes=$(stat -Lc %s "$WORK/www/bench/$FLEET_REPO/resolve/main/model.gguf")
      echo "| 8: the fleet, 4 hives need $((model_bytes / 1048576)) MiB, upstream $CAP/connection | hive A + 3 peers on A's /hf | ${M[s8_fleet]} s until the last | upstream sent $(ratio "${FLEET_BYTES[fleet]}" "$model_bytes")× the model | | $(ratio "${M[s8_single]}" "${M[s8_fleet]}")× a single hive's speed alone (target ≥ 1); upstream bytes target 1× |"
      echo "| | 4 independent hives | ${M[s8_independent]} s until the last | upstream sent $(ratio "${FLEET_BYTES[independent]}" "$model_bytes")× the model | | |"
      echo "| | 1 hive alone | ${M[s8_single]} s | upstream sent $(ratio "${FLEET_BYTES[single]}" "$model_bytes")× the model | | |"
    fi
    if [[ -n ${M[s9_xet]:-} ]]; then
      local xet_mib=$((XET_SIZE / 1048576))
      row "9: one $xet_mib MiB Xet file (fixture's Xet storage, loopback)" "rbee-hive, Xet (v2, multi-range)" s9_xet "$XET_SIZE" "xorb bytes fetched: $(ratio "${XET_BYTES[native]}" "$XET_SIZE")× the file"
      row "" "rbee-hive --xet=off (the resolve bridge)" s9_bridge "$XET_SIZE" ""
      row "" "curl -L of the bridge URL" s9_curl "$XET_SIZE" ""
      echo "| 9u: revision 2, ${XET_UPDATE_PERCENT}% of its chunks changed | rbee-hive (revision 1 on disk) | ${M[s9_update]} s | network $(( ${XET_BYTES[update]} / 1024 )) KiB, disk $(( XET_REUSED / 1048576 )) MiB | | only the changed chunks over the network |"
      echo "| | @huggingface/hub downloadFile (xet) | ${M[s9_update_js]} s | network $(( ${XET_BYTES[update_js]} / 1048576 )) MiB | | |"
    fi
    echo
    echo "Scenario 1, CPU per GiB: the hive $(cpu_per_gib s1_hive $SIZE_LARGE) s; curl -o then sync $(cpu_per_gib s1_curl_synced $SIZE_LARGE) s, plus OpenSSL's SHA-256 $(cpu_per_gib s1_hash $SIZE_LARGE) s; curl + coreutils sha256sum + sync $(cpu_per_gib s1_curl_verified $SIZE_LARGE) s (coreutils hashes at ~0.5 GB/s)."
    echo
    echo "Every watcher of scenario 5 saw $events_seen events while the measurement ran."
    echo
    echo "![chart](chart.png)"
  } >"$RESULTS/results.md"
  {
    for key in s1_hive s1_curl s1_curl_synced s1_wget s1_curl_verified s1u_hive "s1u_fixed$best_n" s1u_aria2c s2_hive s2_aria2c s3_hive s3_aria2c s3_js s3r_hive s3r_before s3r_aria2c s3r_js; do
      [[ -n ${M[$key]:-} ]] && printf '"%s" %s %s\n' "${key/_/ }" "${M[$key]}" "${C[$key]}"
    done
  } >"$WORK/chart.dat"
  gnuplot <<EOF
set terminal pngcairo size 1100,440 noenhanced
set output "$RESULTS/chart.png"
set title "Median wall time and CPU time in s, lower is better (s1u: uncapped, several connections; s2: $CAP per connection; s3r: s3 at ${RTT_MS} ms round trip)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8
set ylabel "seconds"
set xtics rotate by -30
set grid ytics
set key top left
plot "$WORK/chart.dat" using 2:xtic(1) title "wall" lc rgb "#3b7dd8", "" using 3 title "CPU (user + system)" lc rgb "#d8833b"
EOF
  log "wrote $RESULTS/results.md and $RESULTS/chart.png"
}

declare -A RSS FLEET_BYTES XET_BYTES
XET_REUSED=0
CONTROL='{}'
CONTROL_SLOW='{}'
MANY_RESULT='(not run)'
LIST_RESULT='(not run)'
install_tools
build_release
build_baseline
make_data
start_nginx
if [[ -n ${ONLY:-} ]]; then  # ONLY="3 3_remote": just those, their samples in the log, no report
  for scenario in $ONLY; do "scenario_$scenario"; done
  for key in $(printf '%s\n' "${!SAMPLES[@]}" | sort); do
    log "median $key: $(tr ' ' '\n' <<<"${SAMPLES[$key]}" | median) s (CPU $(tr ' ' '\n' <<<"${CPU_SAMPLES[$key]}" | median) s)"
  done
  exit 0
fi
scenario_1
scenario_1u
scenario_2
scenario_3
scenario_3_remote
scenario_4
scenario_5
scenario_5_slowloris
scenario_6
scenario_7
scenario_8
scenario_9
stop_hive
report
cat "$RESULTS/results.md"
