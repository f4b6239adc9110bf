#!/usr/bin/env bash
# End-to-end tests: real clients (Deno CLI over HTTP/2, Python denokv and
# http.client over HTTP/1.1, curl over both) against daemons started by the
# tests on free ports in temp directories.
set -euo pipefail
cd "$(dirname "$0")/../.."
export KVCONNECTD_BIN="$(realpath "${1:-.build/debug/kvconnectd}")"
export DENO_DIR="${DENO_DIR:-$PWD/.venv/deno-cache}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider --rootdir Tests/e2e Tests/e2e/python "${@:2}"
