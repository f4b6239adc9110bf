#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests.
#
#   scripts/pg-test-cluster.sh start DIR   → initdb into DIR, start on a free
#       port (unix socket in DIR, TCP on 127.0.0.1), create database "kvtest",
#       print its URI on stdout (postgresql://USER@127.0.0.1:PORT/kvtest).
#   scripts/pg-test-cluster.sh stop DIR    → stop it (fast) and remove DIR.
#   scripts/pg-test-cluster.sh restart DIR → stop and start again, same port.
#   scripts/pg-test-cluster.sh pause DIR   → stop the server only (fault tests).
#   scripts/pg-test-cluster.sh resume DIR  → start it again on the same port.
#
# Runs the server as the `postgres` OS user when invoked as root (initdb
# refuses root), as the caller otherwise. Trust authentication: local only.
set -euo pipefail

cmd=${1:?usage: $0 start|stop|restart|pause|resume DIR}
dir=${2:?usage: $0 start|stop|restart|pause|resume DIR}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found (PGBIN=$PGBIN)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_server() {
    local port
    port=$(cat "$dir/port")
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null
}

case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    free_port >"$dir/port"
    start_server || { cat "$dir/server.log" >&2; exit 1; }
    port=$(cat "$dir/port")
    as_owner "$PGBIN/createdb" -h "$dir" -p "$port" -U postgres kvtest
    echo "postgresql://postgres@127.0.0.1:$port/kvtest"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
restart)
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    start_server
    ;;
pause)
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
resume)
    start_server
    ;;
*)
    echo "usage: $0 start|stop|restart|pause|resume DIR" >&2
    exit 2
    ;;
esac
