#!/usr/bin/env bash
# Throwaway PostgreSQL primary + hot standby clusters for the HA, failover
# and point-in-time-recovery tests (loopback only, trust authentication).
# Every cluster lives in its own DIR (data in DIR/data, port in DIR/port,
# log in DIR/server.log). Runs the servers as the `postgres` OS user when
# invoked as root (initdb refuses root).
#
#   primary DIR              initdb + start a primary that streams WAL and
#                            archives it into DIR/archive; prints its URI.
#   standby PRIMARY DIR [sync]
#                            pg_basebackup -R from PRIMARY into DIR and start
#                            it as a hot standby (application_name = basename
#                            of DIR); with "sync", PRIMARY waits for it on
#                            every commit (synchronous_standby_names).
#   promote DIR              pg_ctl promote (waits until it accepts writes).
#   pause-replay DIR / resume-replay DIR
#   kill DIR                 kill -9 the postmaster (a crashed machine).
#   start DIR / stop-fast DIR
#   basebackup PRIMARY OUT   a plain base backup (for point-in-time recovery).
#   recover BACKUP ARCHIVE DIR NAME=VALUE...
#                            copy BACKUP into DIR, replay WAL from ARCHIVE up to
#                            the given recovery_target_* settings, promote, start.
#   sql DIR SQL              run SQL on database kvtest (psql -At).
#   uri DIR                  print the URI again.
#   stop DIR                 stop (immediate) and remove DIR.
# Environment: PG_EXTRA_LISTEN=ADDR and PG_EXTRA_HBA=NET/BITS also listen on
# ADDR and trust clients from NET (the partition test's veth pair).
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found (PGBIN=$PGBIN)" >&2; exit 1; }
usage() { sed -n '2,30p' "$0" >&2; exit 2; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
own_dir() {
    mkdir -p "$1"
    if [ "$(id -u)" = 0 ]; then chown postgres "$1"; fi
}
uri() { echo "postgresql://postgres@127.0.0.1:$(cat "$1/port")/kvtest"; }
start() {
    as_owner "$PGBIN/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 120 start >/dev/null \
        || { tail -20 "$1/server.log" >&2; exit 1; }
}
psql_at() {
    local dir=$1; shift
    as_owner "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$(cat "$dir/port")" -U postgres -d kvtest -v ON_ERROR_STOP=1 "$@"
}
# Settings every cluster gets; the port and socket directory are per cluster.
base_conf() {
    local dir=$1
    cat >>"$dir/data/postgresql.conf" <<CONF
port = $(cat "$dir/port")
listen_addresses = '127.0.0.1${PG_EXTRA_LISTEN:+,$PG_EXTRA_LISTEN}'
unix_socket_directories = '$dir'
max_connections = 200
wal_level = replica
max_wal_senders = 10
hot_standby = on
hot_standby_feedback = on
wal_keep_size = '256MB'
# A client that vanished (network partition) must not hold the commit-counter
# row lock for long: end its idle transaction, and notice dead connections.
idle_in_transaction_session_timeout = '5s'
client_connection_check_interval = '2s'
tcp_keepalives_idle = 5
tcp_keepalives_interval = 2
tcp_keepalives_count = 3
track_commit_timestamp = on
CONF
    # Fault tests: a daemon in a network namespace reaches the server over a veth pair.
    if [ -n "${PG_EXTRA_HBA:-}" ]; then
        echo "host all all $PG_EXTRA_HBA trust" >>"$dir/data/pg_hba.conf"
    fi
}

cmd=${1:-}
case "$cmd" in
primary)
    dir=${2:?}; own_dir "$dir"; own_dir "$dir/archive"
    as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    free_port >"$dir/port"
    base_conf "$dir"
    # WAL archive for point-in-time recovery; never overwrite a segment.
    cat >>"$dir/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = 'test ! -f $dir/archive/%f && cp %p $dir/archive/%f'
archive_timeout = 1
CONF
    start "$dir"
    as_owner "$PGBIN/createdb" -h 127.0.0.1 -p "$(cat "$dir/port")" -U postgres kvtest
    uri "$dir"
    ;;
standby)
    primary=${2:?}; dir=${3:?}; mode=${4:-async}
    own_dir "$dir"
    name=$(basename "$dir" | tr -c 'a-zA-Z0-9_\n' '_')
    as_owner "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$(cat "$primary/port")" -U postgres -D "$dir/data" \
        -R -X stream -c fast --no-sync -d "application_name=$name" >"$dir/basebackup.log" 2>&1 \
        || { cat "$dir/basebackup.log" >&2; exit 1; }
    free_port >"$dir/port"
    base_conf "$dir"
    # The standby does not archive (its archive would be the primary's copy).
    echo "archive_mode = off" >>"$dir/data/postgresql.conf"
    start "$dir"
    if [ "$mode" = sync ]; then
        psql_at "$primary" -c "ALTER SYSTEM SET synchronous_standby_names = '$name'" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    # Wait until it streams.
    for _ in $(seq 1 100); do
        [ "$(psql_at "$primary" -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$name' AND state = 'streaming'")" = 1 ] && break
        sleep 0.1
    done
    uri "$dir"
    ;;
promote)
    as_owner "$PGBIN/pg_ctl" -D "${2:?}/data" -w -t 60 promote >/dev/null
    ;;
pause-replay) psql_at "${2:?}" -c "SELECT pg_wal_replay_pause()" >/dev/null ;;
resume-replay) psql_at "${2:?}" -c "SELECT pg_wal_replay_resume()" >/dev/null ;;
kill)
    # The whole server at once, like a lost machine: the postmaster and every
    # backend and WAL sender (killing only the postmaster leaves its children
    # running, and committing, until they notice).
    dir=${2:?}
    pid=$(head -1 "$dir/data/postmaster.pid")
    kill -9 "$pid" $(pgrep -P "$pid") 2>/dev/null || true
    ;;
start) start "${2:?}" ;;
stop-fast) as_owner "$PGBIN/pg_ctl" -D "${2:?}/data" -m fast -w stop >/dev/null ;;
basebackup)
    primary=${2:?}; out=${3:?}
    own_dir "$out"
    as_owner "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$(cat "$primary/port")" -U postgres -D "$out/data" \
        -X stream -c fast --no-sync >"$out/basebackup.log" 2>&1 || { cat "$out/basebackup.log" >&2; exit 1; }
    ;;
recover)
    backup=${2:?}; archive=${3:?}; dir=${4:?}; shift 4
    own_dir "$dir"
    as_owner cp -a "$backup/data" "$dir/data"
    free_port >"$dir/port"
    base_conf "$dir"
    {
        echo "archive_mode = off"
        echo "restore_command = 'cp $archive/%f %p'"
        echo "recovery_target_action = 'promote'"
        for setting in "$@"; do echo "${setting%%=*} = '${setting#*=}'"; done
    } >>"$dir/data/postgresql.conf"
    as_owner touch "$dir/data/recovery.signal"
    start "$dir"
    # Wait until recovery has reached the target and the server was promoted.
    for _ in $(seq 1 600); do
        [ "$(psql_at "$dir" -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
        sleep 0.1
    done
    uri "$dir"
    ;;
sql) dir=${2:?}; psql_at "$dir" -c "${3:?}" ;;
uri) uri "${2:?}" ;;
stop)
    dir=${2:?}
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*) usage ;;
esac
