#!/usr/bin/env bash
# make install / make uninstall. Arguments: ACTION BIN DESTDIR BINDIR SYSCONFDIR UNITDIR MANDIR DOCDIR
set -euo pipefail
cd "$(dirname "$0")/.."
action=$1 bin=$2 dest=$3 bindir=$4 sysconfdir=$5 unitdir=$6 mandir=$7 docdir=$8
case "$action" in
install)
  install -d "$dest$bindir" "$dest$sysconfdir/kvconnectd" "$dest$unitdir" "$dest$mandir" "$dest$docdir"
  install -m 0755 "$bin" "$dest$bindir/kvconnectd"
  sed -e "s|@BINDIR@|$bindir|g" -e "s|@SYSCONFDIR@|$sysconfdir|g" -e "s|@DOCDIR@|$docdir|g" systemd/kvconnectd.service > "$dest$unitdir/kvconnectd.service"
  chmod 0644 "$dest$unitdir/kvconnectd.service"
  # Keep an operator's edited config; always ship the example beside it.
  install -m 0644 config/kvconnectd.yaml "$dest$sysconfdir/kvconnectd/kvconnectd.yaml.example"
  [[ -e "$dest$sysconfdir/kvconnectd/kvconnectd.yaml" ]] || \
    sed -e 's|^database: .*|# database: set by the unit (--database $STATE_DIRECTORY/kv.sqlite3)|' \
        config/kvconnectd.yaml > "$dest$sysconfdir/kvconnectd/kvconnectd.yaml"
  # Man-style page from the binary's own --help, so it never drifts.
  { echo ".TH KVCONNECTD 1"; echo ".SH NAME"; echo "kvconnectd \\- KV Connect server for Deno.openKv";
    echo ".SH SYNOPSIS"; echo ".nf"; "$bin" --help; echo; echo ".SH SERVE"; "$bin" serve --help;
    echo; echo ".SH CHECK-CONFIG"; "$bin" check-config --help; echo ".fi"; } > "$dest$mandir/kvconnectd.1"
  install -m 0644 README.md docs/ARCHITECTURE.md docs/queues.md "$dest$docdir/"
  # The Deno queue module (docs/queues.md): import it from here or copy it.
  install -d "$dest$docdir/clients/deno"
  install -m 0644 clients/deno/queue.ts clients/deno/wire.ts "$dest$docdir/clients/deno/"
  echo "installed kvconnectd into ${dest:-/}"
  ;;
uninstall)
  rm -f "$dest$bindir/kvconnectd" "$dest$unitdir/kvconnectd.service" "$dest$mandir/kvconnectd.1" \
        "$dest$sysconfdir/kvconnectd/kvconnectd.yaml.example" "$dest$docdir/README.md" "$dest$docdir/ARCHITECTURE.md" \
        "$dest$docdir/queues.md" "$dest$docdir/clients/deno/queue.ts" "$dest$docdir/clients/deno/wire.ts"
  rmdir "$dest$docdir/clients/deno" "$dest$docdir/clients" "$dest$docdir" 2>/dev/null || true
  echo "uninstalled kvconnectd from ${dest:-/} (kept $sysconfdir/kvconnectd/kvconnectd.yaml and data)"
  ;;
esac
