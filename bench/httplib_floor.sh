#!/usr/bin/env bash
# What bounds one connection: a bare cpp-httplib client (bench/tools/httplib_floor.cpp) that
# discards the body, against `curl -o /dev/null`, the same file from the same nginx, alternating.
# Neither writes nor hashes, so the gap between them is the HTTP client's reading alone.
#
#   bash bench/httplib_floor.sh [size_bytes=1073741824] [runs=5]
set -euo pipefail

SIZE=${1:-1073741824}
RUNS=${2:-5}
PORT=${PORT:-18090}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbee-floor.XXXXXX")
cleanup() {
  [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in nginx curl g++; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (bash bench/run.sh installs it)" >&2; exit 1; }
done
g++ -O2 -std=c++20 "$ROOT/bench/tools/httplib_floor.cpp" -o "$WORK/httplib_floor" -lcpp-httplib

mkdir -p "$WORK/www"
head -c "$SIZE" /dev/urandom >"$WORK/www/file.bin"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon on;
$([[ $EUID -eq 0 ]] && echo "user root;")
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events {}
http {
  access_log off;
  sendfile on;
  client_body_temp_path $WORK/body;
  proxy_temp_path $WORK/proxy;
  fastcgi_temp_path $WORK/fastcgi;
  uwsgi_temp_path $WORK/uwsgi;
  scgi_temp_path $WORK/scgi;
  server { listen 127.0.0.1:$PORT; root $WORK/www; }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK"
for ((try = 0; try < 50; try++)); do
  curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$PORT/file.bin" && break
  sleep 0.1
done
curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$PORT/file.bin" ||
  { echo "nginx does not serve the file:" >&2; cat "$WORK/error.log" >&2; exit 1; }
cat "$WORK/www/file.bin" >/dev/null  # both read it from the page cache

: >"$WORK/curl.times"
: >"$WORK/httplib.times"
for ((run = 1; run <= RUNS; run++)); do
  curl_s=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/file.bin")
  read -r httplib_s bytes pieces < <("$WORK/httplib_floor" "http://127.0.0.1:$PORT" /file.bin)
  [[ $bytes == "$SIZE" ]] || { echo "cpp-httplib got $bytes bytes, expected $SIZE" >&2; exit 1; }
  echo "run $run: curl -o /dev/null ${curl_s} s, cpp-httplib ${httplib_s} s ($pieces pieces of $((bytes / pieces)) bytes)"
  echo "$curl_s" >>"$WORK/curl.times"
  echo "$httplib_s" >>"$WORK/httplib.times"
done
curl_median=$(median <"$WORK/curl.times")
httplib_median=$(median <"$WORK/httplib.times")
echo "median of $RUNS, $SIZE bytes: curl -o /dev/null $curl_median s, cpp-httplib $httplib_median s" \
  "($(ratio "$httplib_median" "$curl_median")x curl)"
