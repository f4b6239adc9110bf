#!/usr/bin/env bash
# A network namespace joined to the host by two veth pairs, for partition
# tests (the links are private to this host). Needs root. tc filters are not
# available in every container, so the database traffic gets a pair of its
# own that can be cut without cutting the daemon's API:
#
#   up NAME DBHOST DBNS APIHOST APINS
#        namespace NAME; pair NAME-dh (host, DBHOST/30) <-> NAME-dn (namespace,
#        DBNS/30) for PostgreSQL; pair NAME-ah (APIHOST/30) <-> NAME-an
#        (APINS/30) for clients of a daemon running in the namespace
#   cut NAME      partition: the database pair goes down (API pair stays up)
#   heal NAME     the database pair comes back up
#   down NAME     delete the namespace and both pairs (idempotent)
# Run a process inside: ip netns exec NAME COMMAND…
set -euo pipefail
cmd=${1:-}; name=${2:-}
usage() { sed -n '2,15p' "$0" >&2; exit 2; }
[ -n "$cmd" ] && [ -n "$name" ] || usage
[ ${#name} -le 12 ] || { echo "name too long (veth names are at most 15 bytes)" >&2; exit 2; }
in_ns() { ip netns exec "$name" "$@"; }
pair() {  # pair SUFFIX HOSTADDR NSADDR
    ip link add "$name-$1h" type veth peer name "$name-$1n"
    ip link set "$name-$1n" netns "$name"
    ip addr add "$2/30" dev "$name-$1h"
    ip link set "$name-$1h" up
    in_ns ip addr add "$3/30" dev "$name-$1n"
    in_ns ip link set "$name-$1n" up
}

case "$cmd" in
up)
    ip netns add "$name"
    in_ns ip link set lo up
    pair d "${3:?DBHOST}" "${4:?DBNS}"
    pair a "${5:?APIHOST}" "${6:?APINS}"
    ;;
cut) ip link set "$name-dh" down ;;
heal) ip link set "$name-dh" up ;;
down)
    ip netns del "$name" 2>/dev/null || true
    ip link del "$name-dh" 2>/dev/null || true
    ip link del "$name-ah" 2>/dev/null || true
    ;;
*) usage ;;
esac
