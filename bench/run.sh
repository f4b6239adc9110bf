#!/usr/bin/env bash
# `make bench`: kvconnectd (release build) measured with the real Deno CLI,
# side by side with Deno's built-in local SQLite KV in the same run.
# Writes docs/benchmarks.md (latest table) and prints the table.
# Overridable: CONNECTIONS (concurrency, default 64), DURATION (s, default 5),
# WATCH_CHANGES (default 1000), STREAMS (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
CONC=${CONNECTIONS:-64}
DUR=${DURATION:-5}
CHANGES=${WATCH_CHANGES:-1000}
STREAMS=${STREAMS:-1000}
BIN=.build/release/kvconnectd
DENO=.venv/bin/deno
export DENO_DIR="$PWD/.venv/deno-cache" NO_COLOR=1
TOKEN=bench-access-token-0123456789
export DENO_KV_ACCESS_TOKEN=$TOKEN

WORK=$(mktemp -d "$PWD/.bench-XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "$TOKEN" > "$WORK/token"
"$BIN" serve --listen 127.0.0.1:0 --database "$WORK/kv.sqlite3" --access-token-file "$WORK/token" --log-level warning > "$WORK/daemon.log" 2>&1 &
DPID=$!; PIDS+=("$DPID")
for _ in $(seq 100); do
  PORT=$(grep -o 'listen=127.0.0.1:[0-9]*' "$WORK/daemon.log" | head -1 | cut -d: -f2) && [[ -n "$PORT" ]] && break
  sleep 0.1
done
# the startup line is logged at info; with --log-level warning read the port from ss instead
if [[ -z "${PORT:-}" ]]; then
  sleep 0.5
  PORT=$(ss -ltnp | grep "pid=$DPID," | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)
fi
URL=http://127.0.0.1:$PORT
rss() { awk '/VmRSS/ {print $2}' /proc/"$DPID"/status; }
run() { "$DENO" run --unstable-kv -A "$@"; }
RES="$WORK/results.jsonl"

echo "== kvconnectd at $URL (pid $DPID), concurrency $CONC, ${DUR}s per run" >&2
RSS_IDLE=$(rss)
run Tests/e2e/deno/get_latency.ts "$URL" 2000 >> "$RES"
for op in set get; do
  run bench/get_set_throughput.ts "$URL" "$op" "$CONC" "$DUR" >> "$RES"
  run bench/get_set_throughput.ts "$WORK/local.sqlite3" "$op" "$CONC" "$DUR" >> "$RES"
done
run bench/watch_latency.ts "$URL" "$CHANGES" >> "$RES"

# Streams: RSS and throughput with $STREAMS idle watch streams open.
RSS_BEFORE=$(rss)
run bench/watch_streams.ts "$URL" "$STREAMS" > "$WORK/streams.out" 2>&1 &
SPID=$!; PIDS+=("$SPID")
for _ in $(seq 600); do grep -q ready "$WORK/streams.out" && break; sleep 0.2; done
grep -q ready "$WORK/streams.out" || { echo "streams did not open: $(cat "$WORK/streams.out")" >&2; exit 1; }
sleep 1
RSS_STREAMS=$(rss)
for op in set get; do
  run bench/get_set_throughput.ts "$URL" "$op" "$CONC" "$DUR" | sed "s/\"target\":\"kvconnectd\"/\"target\":\"kvconnectd+${STREAMS}streams\"/" >> "$RES"
done
kill "$SPID"

python3 - "$RES" "$RSS_IDLE" "$RSS_BEFORE" "$RSS_STREAMS" "$STREAMS" "$CONC" "$DUR" <<'PY'
import json, os, platform, subprocess, sys, datetime
res = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rss_idle, rss_before, rss_streams, streams, conc, dur = map(int, sys.argv[2:8])
tp = {(r["target"], r["op"]): r for r in res if "op" in r}
lat = next(r for r in res if "p50_ms" in r and "op" not in r and "n" in r)
watch = next(r for r in res if "changes" in r)
kernel = platform.release()
cores = os.cpu_count()
lines = []
lines.append(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {cores} cores, Linux {kernel}, release build, "
             f"synchronous=FULL, Deno CLI 2.9.8 as the client, concurrency {conc}, {dur} s per run. Command: `make bench`.\n")
lines.append("| workload | kvconnectd (Deno CLI over HTTP/2) | Deno local KV (in-process SQLite) | ratio |")
lines.append("|---|---|---|---|")
for op in ("set", "get"):
    a, b = tp[("kvconnectd", op)], tp[("deno-local", op)]
    lines.append(f"| kv.{op}, {conc} concurrent | {a['ops_per_s']} ops/s, p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms | "
                 f"{b['ops_per_s']} ops/s, p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms | {a['ops_per_s']/b['ops_per_s']:.2f} |")
lines.append(f"\nSingle Deno client, sequential `kv.get` (2000): p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms.\n")
lines.append(f"Watch, {watch['changes']} changes, writer and watcher on separate connections: write→frame p50 "
             f"{watch['write_to_frame_p50_ms']} ms, p99 {watch['write_to_frame_p99_ms']} ms; ack→frame p50 "
             f"{watch['ack_to_frame_p50_ms']} ms, p99 {watch['ack_to_frame_p99_ms']} ms.\n")
lines.append(f"| with {streams} idle watch streams open | set ops/s | get ops/s |")
lines.append("|---|---|---|")
for t in ("kvconnectd", f"kvconnectd+{streams}streams"):
    lines.append(f"| {t} | {tp[(t,'set')]['ops_per_s']} (p99 {tp[(t,'set')]['p99_ms']} ms) | {tp[(t,'get')]['ops_per_s']} (p99 {tp[(t,'get')]['p99_ms']} ms) |")
lines.append(f"\nDaemon RSS: idle {rss_idle/1024:.1f} MiB; before streams {rss_before/1024:.1f} MiB; with {streams} watch streams "
             f"{rss_streams/1024:.1f} MiB (+{(rss_streams-rss_before)/1024:.1f} MiB per {streams} streams).")
table = "\n".join(lines)
print(table)
doc = "docs/benchmarks.md"
old = open(doc).read() if os.path.exists(doc) else ""
history = old.split("## History", 1)[1] if "## History" in old else ""
latest = old.split("## Latest", 1)[1].split("## History", 1)[0].strip() if "## Latest" in old else ""
if latest:
    history = "\n\n### " + latest.splitlines()[0][:60] + "\n\n" + latest + history
with open(doc, "w") as f:
    f.write("# Benchmarks\n\nReproduce with `make bench` (CONNECTIONS, DURATION, WATCH_CHANGES, STREAMS overridable).\n\n## Latest\n\n" + table + "\n\n## History\n" + history)
PY
