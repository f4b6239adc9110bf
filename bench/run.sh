#!/usr/bin/env bash
# `make bench`: kvconnectd (release build) under h2load (HTTP/2) and wrk +
# bench/kv.lua (HTTP/1.1), both speaking KV Connect (one metadata exchange,
# then protobuf bodies), with its peers measured in the same run on the same
# disk: redis-server (appendonly yes, appendfsync always) under
# redis-benchmark, Deno's built-in local SQLite KV driven in-process, and the
# Deno CLI as a client of kvconnectd. Writes docs/benchmarks.md (latest table
# + short history) and prints the table. See docs/benchmarks.md for what each
# row measures.
#
# Overridable: CONNECTIONS (default 64), DURATION (s per run, default 5),
# KEYS (read set, default 10000), SCALE_KEYS (large-database row, default
# 10000000: about 2 minutes of preloading and 1.7 GB of disk), BIG_CONNECTIONS
# (default 512), IDLE_CONNECTIONS (default 1000), THREADS (load-generator
# threads, default 2), WATCH_CHANGES (default 1000), STREAMS (default 1000),
# BIN (daemon binary, default .build/release/kvconnectd), BENCH_DOC (report file,
# default docs/benchmarks.md), SKIP (space-separated
# sections to skip: h2 wrk redis deno scale values conns idle watch streams pg
# queue), QUEUE_MESSAGES (queue section, default 20000), ONLY=queue (just the
# queue section: its table replaces the one in docs/benchmarks.md's latest
# report, the rest of the report is kept; `make bench-queue`).
set -euo pipefail
cd "$(dirname "$0")/.."
CONC=${CONNECTIONS:-64}
DUR=${DURATION:-5}
KEYS=${KEYS:-10000}
SCALE_KEYS=${SCALE_KEYS:-10000000}
BIGC=${BIG_CONNECTIONS:-512}
IDLE=${IDLE_CONNECTIONS:-1000}
THREADS=${THREADS:-2}
CHANGES=${WATCH_CHANGES:-1000}
STREAMS=${STREAMS:-1000}
HOT=16
SKIP=" ${SKIP:-} "
QMSG=${QUEUE_MESSAGES:-20000}
if [[ "${ONLY:-}" == queue ]]; then SKIP=" h2 wrk redis deno scale values conns idle watch streams pg main "; fi
BIN=${BIN:-.build/release/kvconnectd}
DENO=.venv/bin/deno
PY=.venv/bin/python
export DENO_DIR="$PWD/.venv/deno-cache" NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
TOKEN=bench-access-token-0123456789
export DENO_KV_ACCESS_TOKEN=$TOKEN
for tool in h2load wrk redis-server redis-benchmark; do
  command -v $tool >/dev/null || { echo "bench: $tool missing: run 'bash scripts/install-deps.sh --bench'" >&2; exit 1; }
done
[[ -x "$BIN" ]] || { echo "bench: $BIN missing: swift build -c release --product kvconnectd" >&2; exit 1; }
want() { [[ "$SKIP" != *" $1 "* ]]; }

# Everything (daemon databases, Redis AOF, Deno local KV) under one directory
# of the worktree, so every peer writes to the same disk.
WORK=$(mktemp -d "$PWD/.bench-XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n "${PGSTOP:-}" ]] && { eval "$PGSTOP" || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RES="$WORK/results.jsonl"; : > "$RES"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
echo "$TOKEN" > "$WORK/token"
log() { echo "== $*" >&2; }

# tag '{"k":"v"}' < json lines → merged lines appended to results
tag() { "$PY" -c 'import json,sys
t=json.loads(sys.argv[1])
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"): print(json.dumps({**t, **json.loads(l)}))' "$1" | tee -a "$RES" >&2; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_daemon NAME [DATABASE] → sets DPID, URL, DTOKEN (data-plane token); SQLite unless DATABASE is a URI
start_daemon() {
  local dir="$WORK/$1"; mkdir -p "$dir"
  "$BIN" serve --listen 127.0.0.1:0 --database "${2:-$dir/kv.sqlite3}" --access-token-file "$WORK/token" > "$dir/daemon.log" 2>&1 &
  DPID=$!; PIDS+=("$DPID")
  local port=""
  for _ in $(seq 200); do
    port=$(grep -o 'listen=127.0.0.1:[0-9]*' "$dir/daemon.log" | head -1 | cut -d: -f2) && [[ -n "$port" ]] && break
    kill -0 "$DPID" 2>/dev/null || { cat "$dir/daemon.log" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "daemon did not start" >&2; cat "$dir/daemon.log" >&2; exit 1; }
  URL=http://127.0.0.1:$port
  DTOKEN=$("$PY" bench/kvwire.py token "$URL" "$TOKEN")
}
stop_daemon() { kill "$DPID"; wait "$DPID" 2>/dev/null || true; }
rss() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }

# wrk_run TAGJSON CONNS OP [VAR=VALUE...]   (HTTP/1.1, random keys, bench/kv.lua)
wrk_run() {
  local t=$1 c=$2 op=$3; shift 3
  env KV_TOKEN="$DTOKEN" KV_OP="$op" KV_KEYS="$KEYS" KV_HOT="$HOT" "$@" \
    wrk -t"$THREADS" -c"$c" -d"${DUR}s" --timeout 10s -s bench/kv.lua "$URL" > "$WORK/wrk.out" 2>&1 || true
  grep '^{' "$WORK/wrk.out" | tag "$t" || { cat "$WORK/wrk.out" >&2; exit 1; }
}
# h2_run TAGJSON CONNS BODY PATH   (HTTP/2 prior knowledge, one fixed body per run)
h2_run() {
  local t=$1 c=$2 body=$3 path=$4
  h2load -c "$c" -t "$THREADS" -m 1 -D "$DUR" --warm-up-time=1 \
    -H "authorization: Bearer $DTOKEN" -H "content-type: application/x-protobuf" \
    -d "$WORK/bodies/$body" --log-file="$WORK/h2.log" "$URL$path" > "$WORK/h2.out" 2>&1 || true
  "$PY" bench/kvwire.py h2load "$WORK/h2.log" "$WORK/h2.out" | tag "$t"
}
# redis_run TAGPREFIX CONNS VALUEBYTES: SET then GET, each ~DURATION seconds
redis_run() {
  local t=$1 c=$2 d=$3 op rps n cal=20000
  (( d > 1000 )) && cal=2000
  for op in set get; do
    redis-benchmark -p "$RPORT" -c "$c" -n "$cal" -d "$d" -r "$KEYS" -t "$op" --csv > "$WORK/redis.csv" 2>/dev/null
    rps=$("$PY" bench/kvwire.py redis "$WORK/redis.csv" | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.readline())["ops_per_s"])')
    n=$(( rps * DUR )); (( n < cal )) && n=$cal
    redis-benchmark -p "$RPORT" -c "$c" -n "$n" -d "$d" -r "$KEYS" -t "$op" --csv > "$WORK/redis.csv" 2>/dev/null
    "$PY" bench/kvwire.py redis "$WORK/redis.csv" | tag "${t%\}},\"workload\":\"$op\"}"
  done
}
deno_run() { "$DENO" run --unstable-kv -A "$@"; }

# ---------------------------------------------------------------- queues
# Webhook push to a local receiver (bench/queue_bench.ts sink: Deno.serve,
# answers 200 at once), pull through clients/deno/queue.ts with 8 handlers,
# deadline → delivery, and Deno's own in-process queue (Deno.openKv on a local
# file, enqueue + listenQueue) as the peer, all in this run.
if want queue; then
  log "queues: $QMSG messages"
  coproc SINK { exec "$DENO" run -A bench/queue_bench.ts sink; }
  SINK_PID=$SINK_PID; PIDS+=("$SINK_PID")
  read -r sink_line <&"${SINK[0]}"
  SINK_URL="http://127.0.0.1:$(echo "$sink_line" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["port"])')/queue"
  echo "a-long-random-webhook-secret" > "$WORK/webhook.secret"
  mkdir -p "$WORK/queue-push"
  "$BIN" serve --listen 127.0.0.1:0 --database "$WORK/queue-push/kv.sqlite3" --access-token-file "$WORK/token" \
    --queue-webhook-url "$SINK_URL" --queue-webhook-secret-file "$WORK/webhook.secret" --queue-concurrency 32 \
    > "$WORK/queue-push/daemon.log" 2>&1 &
  DPID=$!; PIDS+=("$DPID")
  for _ in $(seq 200); do grep -q 'listen=127' "$WORK/queue-push/daemon.log" && break; sleep 0.1; done
  QURL="http://127.0.0.1:$(grep -o 'listen=127.0.0.1:[0-9]*' "$WORK/queue-push/daemon.log" | head -1 | cut -d: -f2)"
  deno_run bench/queue_bench.ts push "$QURL" "$SINK_URL" "$QMSG" | tag '{"kind":"queue","workload":"push"}'
  deno_run bench/queue_bench.ts lag "$QURL" "$SINK_URL" 2000 | tag '{"kind":"queue","workload":"lag"}'
  stop_daemon
  kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true
  start_daemon queue-pull
  deno_run bench/queue_bench.ts pull "$URL" "$QMSG" 8 | tag '{"kind":"queue","workload":"pull"}'
  stop_daemon
  deno_run bench/deno_local_queue.ts "$WORK" "$QMSG" | tag '{"kind":"queue","workload":"deno-local"}'
fi

# ---------------------------------------------------------------- main daemon
if want main; then
start_daemon main
MAIN_PID=$DPID MAIN_URL=$URL MAIN_TOKEN=$DTOKEN
sleep 0.5
RSS_IDLE=$(rss "$DPID")
log "kvconnectd $URL (pid $DPID), $CONC connections, ${DUR}s per run, $KEYS keys"
# idle connections first, on the fresh daemon: the RSS difference is theirs alone
if want idle; then
  log "RSS with $IDLE idle keep-alive connections"
  for kind in h1 h2; do
    before=$(rss "$DPID")
    coproc IDLER { exec "$PY" bench/kvwire.py idle "$URL" "$IDLE" "$kind"; }
    IPID=$IDLER_PID; PIDS+=("$IPID")
    read -r line <&"${IDLER[0]}" || true
    sleep 2
    held=$(ss -tnH state established "( dport = :${URL##*:} )" | wc -l)
    echo "{\"conn_kind\":\"$kind\",\"rss_before_kib\":$before,\"rss_kib\":$(rss "$DPID"),\"opened\":\"${line#ready }\",\"held_after_2s\":$held}" | tag '{"kind":"idle"}'
    kill "$IPID" 2>/dev/null || true; wait "$IPID" 2>/dev/null || true
    sleep 1
  done
fi

"$PY" bench/kvwire.py preload "$URL" "$DTOKEN" r "$KEYS" 100 2 | tag '{"kind":"preload"}'
"$PY" bench/kvwire.py preload "$URL" "$DTOKEN" hot "$HOT" 100 1 | tag '{"kind":"preload"}'
"$PY" bench/kvwire.py bodies "$WORK/bodies" "$KEYS" "$HOT"

if want h2; then
  log "h2load (HTTP/2)"
  h2_run '{"kind":"main","peer":"kvconnectd h2 (h2load)","workload":"read"}' "$CONC" read.bin /v2/snapshot_read
  h2_run '{"kind":"main","peer":"kvconnectd h2 (h2load)","workload":"write"}' "$CONC" write.bin /v2/atomic_write
  h2_run '{"kind":"main","peer":"kvconnectd h2 (h2load)","workload":"list"}' "$CONC" list.bin /v2/snapshot_read
fi
if want wrk; then
  log "wrk (HTTP/1.1)"
  for op in read write mixed list cas; do
    wrk_run "{\"kind\":\"main\",\"peer\":\"kvconnectd h1 (wrk)\",\"workload\":\"$op\"}" "$CONC" "$op"
  done
fi

if want redis; then
  log "redis-server appendonly yes, appendfsync always"
  RPORT=$(free_port); mkdir -p "$WORK/redis"
  redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes --appendfsync always \
    --save "" --daemonize no --logfile "$WORK/redis/redis.log" &
  RPID=$!; PIDS+=("$RPID")
  for _ in $(seq 100); do redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  redis_run '{"kind":"main","peer":"redis (redis-benchmark)"}' "$CONC" 100
fi

if want deno; then
  log "Deno CLI → kvconnectd vs Deno local KV"
  deno_run Tests/e2e/deno/get_latency.ts "$URL" 2000 | tag '{"kind":"seqget"}'
  for op in set get mixed list cas; do
    deno_run bench/get_set_throughput.ts "$URL" "$op" "$CONC" "$DUR" | tag "{\"kind\":\"deno\",\"workload\":\"$op\"}"
    deno_run bench/get_set_throughput.ts "$WORK/deno-local.sqlite3" "$op" "$CONC" "$DUR" | tag "{\"kind\":\"deno\",\"workload\":\"$op\"}"
  done
fi

if want values; then
  log "value sizes"
  "$PY" bench/kvwire.py preload "$URL" "$DTOKEN" v4k 1000 4096 2 | tag '{"kind":"preload"}'
  "$PY" bench/kvwire.py preload "$URL" "$DTOKEN" v64k 1000 65536 2 | tag '{"kind":"preload"}'
  for v in 4096:v4k 65536:v64k; do
    size=${v%%:*} pre=${v##*:}
    wrk_run "{\"kind\":\"value\",\"value_bytes\":$size,\"peer\":\"kvconnectd h1 (wrk)\",\"workload\":\"read\"}" "$CONC" read KV_PREFIX="$pre" KV_KEYS=1000
    wrk_run "{\"kind\":\"value\",\"value_bytes\":$size,\"peer\":\"kvconnectd h1 (wrk)\",\"workload\":\"write\"}" "$CONC" write KV_VALUE="$size"
    want redis && redis_run "{\"kind\":\"value\",\"value_bytes\":$size,\"peer\":\"redis (redis-benchmark)\"}" "$CONC" "$size"
  done
fi

if want conns; then
  log "$BIGC connections"
  wrk_run "{\"kind\":\"conns\",\"conns\":$BIGC,\"peer\":\"kvconnectd h1 (wrk)\",\"workload\":\"read\"}" "$BIGC" read
  wrk_run "{\"kind\":\"conns\",\"conns\":$BIGC,\"peer\":\"kvconnectd h1 (wrk)\",\"workload\":\"write\"}" "$BIGC" write
  want h2 && h2_run "{\"kind\":\"conns\",\"conns\":$BIGC,\"peer\":\"kvconnectd h2 (h2load)\",\"workload\":\"read\"}" "$BIGC" read.bin /v2/snapshot_read
  want redis && redis_run "{\"kind\":\"conns\",\"conns\":$BIGC,\"peer\":\"redis (redis-benchmark)\"}" "$BIGC" 100
fi
[[ -n "${RPID:-}" ]] && { kill "$RPID"; wait "$RPID" 2>/dev/null || true; }

if want watch; then
  log "watch latency"
  deno_run bench/watch_latency.ts "$URL" "$CHANGES" | tag '{"kind":"watch"}'
fi

if want streams; then
  log "$STREAMS watch streams"
  RSS_BEFORE=$(rss "$DPID")
  "$DENO" run --unstable-kv -A bench/watch_streams.ts "$URL" "$STREAMS" > "$WORK/streams.out" 2>&1 &
  SPID=$!; PIDS+=("$SPID")
  for _ in $(seq 600); do grep -q ready "$WORK/streams.out" && break; sleep 0.2; done
  grep -q ready "$WORK/streams.out" || { echo "streams did not open: $(cat "$WORK/streams.out")" >&2; exit 1; }
  sleep 1
  echo "{\"streams\":$STREAMS,\"rss_before_kib\":$RSS_BEFORE,\"rss_kib\":$(rss "$DPID")}" | tag '{"kind":"streams"}'
  for op in set get; do
    deno_run bench/get_set_throughput.ts "$URL" "$op" "$CONC" "$DUR" | tag "{\"kind\":\"streams-tp\",\"workload\":\"$op\"}"
  done
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
fi
RSS_AFTER=$(rss "$DPID")
stop_daemon
fi

# ------------------------------- PostgreSQL backend: 1 and 2 daemons, pgbench
# One cluster in WORK (same disk), fsync on (durable like the SQLite rows),
# 64-client pgbench -S (select-only) and -N (simple update) with prepared
# statements on it, then kvconnectd with that cluster as its backend: h2load
# point reads and writes through one daemon and through two (half the
# connections each, run at the same time), and watch latency from a write
# through one daemon to the frame from the other.
if want pg; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  PGDIR="$WORK/pg"; mkdir -p "$PGDIR"; chmod 755 "$WORK"
  [[ $(id -u) == 0 ]] && chown postgres "$PGDIR"
  PGPORT=$(free_port)
  as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 > "$PGDIR/initdb.log" 2>&1
  PGSTOP='as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop > /dev/null 2>&1'
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB" start > /dev/null
  PGURI="postgresql://postgres@127.0.0.1:$PGPORT"
  log "pgbench on PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (port $PGPORT)"
  createdb -h 127.0.0.1 -p "$PGPORT" -U postgres pgbench
  pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -q -s 10 pgbench > "$PGDIR/pgbench-init.log" 2>&1
  for mode in S N; do
    pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -M prepared -$mode -c "$CONC" -j "$THREADS" -T "$DUR" pgbench > "$WORK/pgbench.out" 2>&1 || true
    "$PY" -c 'import json,re,sys
t=open(sys.argv[1]).read()
tps=re.search(r"tps = ([0-9.]+) \(without initial", t) or re.search(r"tps = ([0-9.]+)", t)
lat=re.search(r"latency average = ([0-9.]+) ms", t)
print(json.dumps({"ops_per_s": round(float(tps.group(1))), "latency_avg_ms": float(lat.group(1)) if lat else None}) if tps else sys.exit(t))' "$WORK/pgbench.out" \
      | tag "{\"kind\":\"pg\",\"peer\":\"pgbench -$mode\",\"workload\":\"$([[ $mode == S ]] && echo read || echo write)\"}"
  done
  createdb -h 127.0.0.1 -p "$PGPORT" -U postgres kv
  start_daemon pg1 "$PGURI/kv"; PG1_PID=$DPID PG1_URL=$URL PG1_TOKEN=$DTOKEN
  start_daemon pg2 "$PGURI/kv"; PG2_PID=$DPID PG2_URL=$URL PG2_TOKEN=$DTOKEN
  "$PY" bench/kvwire.py preload "$PG1_URL" "$PG1_TOKEN" r "$KEYS" 100 2 | tag '{"kind":"preload"}'
  "$PY" bench/kvwire.py preload "$PG1_URL" "$PG1_TOKEN" hot "$HOT" 100 1 | tag '{"kind":"preload"}'
  URL=$PG1_URL DTOKEN=$PG1_TOKEN
  h2_run '{"kind":"pg","peer":"kvconnectd PostgreSQL, 1 daemon (h2load)","workload":"read"}' "$CONC" read.bin /v2/snapshot_read
  h2_run '{"kind":"pg","peer":"kvconnectd PostgreSQL, 1 daemon (h2load)","workload":"write"}' "$CONC" write.bin /v2/atomic_write
  for wl in read:read.bin:/v2/snapshot_read write:write.bin:/v2/atomic_write; do
    IFS=: read -r name body path <<< "$wl"
    H2PIDS=()
    for i in 1 2; do
      eval "u=\$PG${i}_URL t=\$PG${i}_TOKEN"
      h2load -c $((CONC / 2)) -t 1 -m 1 -D "$DUR" --warm-up-time=1 -H "authorization: Bearer $t" \
        -H "content-type: application/x-protobuf" -d "$WORK/bodies/$body" --log-file="$WORK/h2-$i.log" "$u$path" > "$WORK/h2-$i.out" 2>&1 &
      H2PIDS+=($!)
    done
    wait "${H2PIDS[@]}" || true
    "$PY" bench/kvwire.py h2load-sum "$WORK/h2-1.log" "$WORK/h2-1.out" "$WORK/h2-2.log" "$WORK/h2-2.out" \
      | tag "{\"kind\":\"pg\",\"peer\":\"kvconnectd PostgreSQL, 2 daemons (h2load)\",\"workload\":\"$name\"}"
  done
  deno_run bench/watch_latency.ts "$PG1_URL" "$CHANGES" "$PG2_URL" | tag '{"kind":"pg-watch"}'
  kill "$PG1_PID" "$PG2_PID"; wait "$PG1_PID" "$PG2_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop > /dev/null
  PGSTOP=""
fi

# ------------------------------------------------- database size: KEYS vs SCALE_KEYS
if want scale; then
  for n in "$KEYS" "$SCALE_KEYS"; do
    log "fresh database with $n keys"
    start_daemon "scale-$n"
    "$PY" bench/kvwire.py preload "$URL" "$DTOKEN" r "$n" 100 2 | tag "{\"kind\":\"preload\"}"
    sleep 1
    wrk_run "{\"kind\":\"scale\",\"keys\":$n,\"peer\":\"kvconnectd h1 (wrk)\",\"workload\":\"read\"}" "$CONC" read KV_KEYS="$n"
    wrk_run "{\"kind\":\"scale\",\"keys\":$n,\"peer\":\"kvconnectd h1 (wrk)\",\"workload\":\"write\"}" "$CONC" write
    echo "{\"db_bytes\":$(stat -c %s "$WORK/scale-$n/kv.sqlite3")}" | tag "{\"kind\":\"dbsize\",\"keys\":$n}"
    stop_daemon
    rm -f "$WORK/scale-$n"/kv.sqlite3*
  done
fi

T_END=$(date +%s)
"$PY" bench/report.py "$RES" "${BENCH_DOC:-docs/benchmarks.md}" \
  conc="$CONC" dur="$DUR" keys="$KEYS" scale_keys="$SCALE_KEYS" bigc="$BIGC" idle="$IDLE" threads="$THREADS" \
  rss_idle="${RSS_IDLE:-0}" rss_after="${RSS_AFTER:-0}" load_start="$LOAD_START" load_end="$(cut -d' ' -f1-3 /proc/loadavg)" \
  seconds="$((T_END - T_START))" cmd="${BENCH_CMD:-make bench}" only="${ONLY:-}"
