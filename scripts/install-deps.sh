#!/usr/bin/env bash
# Installs what building and testing kvconnectd needs: Debian packages (only
# the missing ones) and, with --test, the Deno CLI and Python's denokv client
# from PyPI into the project-local .venv/. --bench adds the benchmark's load
# generators and peers (h2load, wrk, redis-server, redis-benchmark) on top of
# everything --test installs.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(libmicrohttpd-dev libnghttp2-dev libgnutls28-dev libsqlite3-dev libprotobuf-c-dev libpq-dev libcurl4-openssl-dev pkg-config curl)
# postgresql: throwaway clusters for the PostgreSQL backend tests; haproxy: the
# load-balancer example; chromium + chromium-driver: the console's browser tests.
TEST_DEBS=(nghttp2-client openssl systemd protobuf-c-compiler postgresql haproxy chromium chromium-driver iproute2)
BENCH_DEBS=(nghttp2-client wrk redis-server redis-tools postgresql-contrib)

MODE=${1:-}
want=("${DEBS[@]}")
[[ "$MODE" == "--test" || "$MODE" == "--bench" ]] && want+=("${TEST_DEBS[@]}")
[[ "$MODE" == "--bench" ]] && want+=("${BENCH_DEBS[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "$MODE" == "--test" || "$MODE" == "--bench" ]]; then
  DENO_VERSION=2.9.8
  DENOKV_PY_VERSION=${DENOKV_PY_VERSION:-0.1.0a0.dev180}
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
  fi
  if ! .venv/bin/deno --version 2>/dev/null | grep -q "deno $DENO_VERSION"; then
    echo "install-deps: installing deno==$DENO_VERSION into .venv"
    .venv/bin/pip install -q "deno==$DENO_VERSION"
  fi
  if ! .venv/bin/python -c 'import pytest' 2>/dev/null; then
    echo "install-deps: installing pytest into .venv"
    .venv/bin/pip install -q "pytest==${PYTEST_VERSION:-9.2.0}"
  fi
  if ! .venv/bin/python -c 'import selenium' 2>/dev/null; then
    echo "install-deps: installing selenium into .venv"
    .venv/bin/pip install -q "selenium==${SELENIUM_VERSION:-4.27.1}"
  fi
  if ! .venv/bin/python -c 'import denokv' 2>/dev/null; then
    echo "install-deps: installing denokv (Python KV Connect client) into .venv"
    .venv/bin/pip install -q "denokv${DENOKV_PY_VERSION:+==$DENOKV_PY_VERSION}"
  fi
fi
