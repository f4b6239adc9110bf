#!/usr/bin/env bash
# `make bench-profile`: perf profile (cpu-clock, call graphs) of the release
# daemon during wrk read, wrk write and h2load read runs (CONNECTIONS, default
# 64; DURATION, default 10). Prints the top entries of each profile (self
# time, by thread, inclusive) and keeps the perf.data files in $OUT (default
# a new /tmp/kvconnectd-profile-* directory).
set -euo pipefail
cd "$(dirname "$0")/.."
CONC=${CONNECTIONS:-64}; DUR=${DURATION:-10}; KEYS=${KEYS:-10000}; THREADS=${THREADS:-2}
BIN=${BIN:-.build/release/kvconnectd}; PY=.venv/bin/python
OUT=${OUT:-$(mktemp -d /tmp/kvconnectd-profile-XXXXXX)}; mkdir -p "$OUT"; echo "perf data in $OUT" >&2
TOKEN=bench-access-token-0123456789
WORK=$(mktemp -d "$PWD/.bench-XXXXXX"); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
echo "$TOKEN" > "$WORK/token"
"$BIN" serve --listen 127.0.0.1:0 --database "$WORK/kv.sqlite3" --access-token-file "$WORK/token" > "$WORK/daemon.log" 2>&1 &
DPID=$!; PIDS+=("$DPID")
for _ in $(seq 200); do PORT=$(grep -o 'listen=127.0.0.1:[0-9]*' "$WORK/daemon.log" | head -1 | cut -d: -f2) && [[ -n "$PORT" ]] && break; sleep 0.1; done
URL=http://127.0.0.1:$PORT
DTOKEN=$("$PY" bench/kvwire.py token "$URL" "$TOKEN")
"$PY" bench/kvwire.py preload "$URL" "$DTOKEN" r "$KEYS" 100 2 >&2
"$PY" bench/kvwire.py bodies "$WORK/bodies" "$KEYS" 16

profile() {   # NAME LOADCOMMAND...
  set +o pipefail
  local name=$1; shift
  "$@" > "$OUT/$name.load.txt" 2>&1 &
  local lp=$!; PIDS+=("$lp")
  sleep 1
  perf record -F 999 -g -p "$DPID" -o "$OUT/$name.perf.data" -- sleep $((DUR - 2)) 2>/dev/null
  wait "$lp" || true
  echo "===== $name: $(grep -E '^\{|req/s' "$OUT/$name.load.txt" | head -2 | tr '\n' ' ')"
  echo "--- self (top 25)"
  perf report -i "$OUT/$name.perf.data" --stdio --no-children --sort dso,sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25
  echo "--- by thread (comm)"
  perf report -i "$OUT/$name.perf.data" --stdio --no-children --sort comm -g none 2>/dev/null | grep -E '^ +[0-9]' | head -10
  echo "--- inclusive (top 30)"
  perf report -i "$OUT/$name.perf.data" --stdio --children --sort sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -30
}
export KV_TOKEN=$DTOKEN KV_KEYS=$KEYS
KV_OP=read profile wrk-read wrk -t"$THREADS" -c"$CONC" -d"${DUR}s" -s bench/kv.lua "$URL"
KV_OP=write profile wrk-write wrk -t"$THREADS" -c"$CONC" -d"${DUR}s" -s bench/kv.lua "$URL"
profile h2load-read h2load -c "$CONC" -t "$THREADS" -m 1 -D "$DUR" -H "authorization: Bearer $DTOKEN" \
  -H "content-type: application/x-protobuf" -d "$WORK/bodies/read.bin" "$URL/v2/snapshot_read"
