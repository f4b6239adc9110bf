#!/usr/bin/env bash
# Fails when the committed protobuf-c code (Sources/CDatapath) is not what
# protoc-c generates from proto/datapath.proto: edit the .proto, run `make proto`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || bash scripts/install-deps.sh --test
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd proto && protoc-c --c_out="$out" datapath.proto)
status=0
diff -u Sources/CDatapath/datapath.pb-c.c "$out/datapath.pb-c.c" || status=1
diff -u Sources/CDatapath/include/datapath.pb-c.h "$out/datapath.pb-c.h" || status=1
if ((status)); then
  echo "check-generated: Sources/CDatapath is out of date with proto/datapath.proto (run make proto)" >&2
  exit 1
fi
echo "check-generated: protobuf-c code matches proto/datapath.proto"
