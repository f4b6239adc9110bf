#!/usr/bin/env bash
# `make run`: the release daemon on the embedded SQLite default, with a
# development access token kept in data/dev-token (generated once).
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-./data/kv.sqlite3}
PORT=${2:-4512}
mkdir -p "$(dirname "$DB")"
TOKEN_FILE="$(dirname "$DB")/dev-token"
if [[ ! -s "$TOKEN_FILE" ]]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TOKEN_FILE")
fi
TOKEN=$(cat "$TOKEN_FILE")
cat <<MSG

  kvconnectd: development daemon on http://127.0.0.1:$PORT (database $DB)
  Connect from Deno (in another terminal):

    DENO_KV_ACCESS_TOKEN=$TOKEN deno run --unstable-kv -A your_script.ts

  with  const kv = await Deno.openKv("http://127.0.0.1:$PORT");
  (the Deno CLI used by the tests is at .venv/bin/deno after 'make test')
  Stop with Ctrl-C.

MSG
exec .build/release/kvconnectd serve --listen "127.0.0.1:$PORT" --database "$DB" --access-token-file "$TOKEN_FILE"
