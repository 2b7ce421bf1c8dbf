#!/usr/bin/env bash
# Installs everything rbee-hive needs to build (and, with --for-tests, to test), from Debian 12
# packages and, for the browser test, the npm registry. Idempotent: when everything is present
# it does nothing (no apt-get update, no npm).
#
#   bash scripts/install-deps.sh              # build and run
#   bash scripts/install-deps.sh --for-tests  # also tmux, Chromium, node and playwright-core
set -euo pipefail

for_tests=false
[ "${1:-}" = "--for-tests" ] && for_tests=true

packages=(
  build-essential cmake pkg-config
  libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev
  libyaml-cpp-dev libfmt-dev libasio-dev doctest-dev nlohmann-json3-dev libcli11-dev
  libcurl4-openssl-dev curl liblz4-dev
)
if $for_tests; then
  packages+=(tmux chromium)  # `pull` on a real terminal; the dashboard in a real browser
  packages+=(tinyproxy-bin)  # a real proxy for the proxy tests (HTTPS_PROXY, CONNECT, NO_PROXY)
  packages+=(nginx-light openssl)  # TLS with a test CA and HTTP/2 in front of the Hub fixture
  packages+=(clang libclang-rt-14-dev)  # the ASan+UBSan build and libFuzzer (make fuzz)
  packages+=(ccache)  # compiled objects kept outside the clone, for the next build here
  command -v node >/dev/null || packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# playwright-core drives Debian's Chromium in the dashboard test (it downloads no browser);
# eventsource is a standard SSE client for the stream test.
if $for_tests; then
  browser_tests="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  if [ ! -d "$browser_tests/node_modules/playwright-core" ] ||
     [ ! -d "$browser_tests/node_modules/eventsource" ]; then
    echo "install-deps: npm ci in tests/browser" >&2
    npm ci --prefix "$browser_tests" --no-audit --no-fund --loglevel=error >/dev/null
  fi
  # The official Hugging Face JS client, for the /hf mirror's end-to-end test.
  hub_clients="$(cd "$(dirname "$0")/.." && pwd)/tests/hub_clients"
  if [ ! -d "$hub_clients/node_modules/@huggingface/hub" ]; then
    echo "install-deps: npm ci in tests/hub_clients" >&2
    npm ci --prefix "$hub_clients" --no-audit --no-fund --loglevel=error >/dev/null
  fi
  # A real llama.cpp for the store's end-to-end test: node-llama-cpp with its prebuilt CPU
  # binary (83 MB). No optional packages (744 MB of CUDA/Vulkan builds) and no install script
  # (it would offer to download or build llama.cpp): the test calls getLlama({build: "never"}).
  llama_tests="$(cd "$(dirname "$0")/.." && pwd)/tests/llama"
  if [ ! -d "$llama_tests/node_modules/@node-llama-cpp/linux-x64" ]; then
    echo "install-deps: npm ci in tests/llama" >&2
    npm ci --prefix "$llama_tests" --omit=optional --ignore-scripts --no-audit --no-fund \
      --loglevel=error >/dev/null
  fi
fi
