#!/usr/bin/env bash
# Builds the libFuzzer targets into .build-fuzz and runs each one for
# FUZZ_SECONDS (default 600). Usage: Tests/Fuzz/run.sh [target...]
#
# Each target starts from its committed seeds (Tests/Fuzz/corpus/<target>/,
# read only) plus what earlier runs found (.build-fuzz/corpus/<target>/).
# Crashes go to .build-fuzz/artifacts/<target>/ and make the script fail;
# logs to .build-fuzz/logs/<target>.log. FUZZ_MERGE=1 afterwards folds the
# new inputs that add coverage into the committed corpus (libFuzzer -merge).
# Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 -workers=2".
set -euo pipefail
cd "$(dirname "$0")/../.."

ALL=(fuzz-snapshot-read fuzz-atomic-write fuzz-watch fuzz-metadata-json fuzz-v8 fuzz-key)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
SECS=${FUZZ_SECONDS:-600}
SWIFT=${SWIFT:-swift}
SCRATCH=.build-fuzz

# The manifest declares the fuzz targets only with KVCONNECTD_FUZZ=1 (Package.swift).
export KVCONNECTD_FUZZ=1
# Let ASan/libFuzzer report Swift traps (ud2 = SIGILL) with a stack and
# write the crashing input, instead of the Swift backtracer taking over.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-handle_sigill=1:handle_abort=1:detect_leaks=1}

[[ -f Package.resolved && ! -f $SCRATCH/Package.resolved ]] && mkdir -p $SCRATCH && cp Package.resolved $SCRATCH/
for t in "${TARGETS[@]}"; do
  echo "fuzz: building $t"
  if ! $SWIFT build --scratch-path $SCRATCH --product "$t" >"$SCRATCH.build-$t.log" 2>&1; then
    grep -v "Cannot export local symbol" "$SCRATCH.build-$t.log" | tail -40
    exit 1
  fi
  rm -f "$SCRATCH.build-$t.log"
done
BIN=$($SWIFT build --scratch-path $SCRATCH --show-bin-path)

status=0
summary=()
for t in "${TARGETS[@]}"; do
  seeds=Tests/Fuzz/corpus/$t
  work=$SCRATCH/corpus/$t
  arts=$SCRATCH/artifacts/$t
  log=$SCRATCH/logs/$t.log
  mkdir -p "$seeds" "$work" "$arts" "$(dirname "$log")"
  echo "fuzz: $t for ${SECS}s"
  rc=0
  # shellcheck disable=SC2086
  # fuzz-atomic-write keeps a SQLiteStore under $TMPDIR: give it one we remove.
  tmp=$SCRATCH/tmp/$t
  rm -rf "$tmp" && mkdir -p "$tmp"
  TMPDIR=$PWD/$tmp "$BIN/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$arts/" ${FUZZ_FLAGS:-} "$work" "$seeds" >"$log" 2>&1 || rc=$?
  rm -rf "$tmp"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if ((rc != 0)); then
    status=1
    echo "fuzz: $t FAILED (exit $rc); log $log, input in $arts/"
    grep -E "ERROR|Fatal error|check failed|SUMMARY|^ *#[0-9]+ .* in " "$log" | head -30
  fi
  summary+=("$t: ${execs:-?} execs in ${SECS}s (${rate:-?}/s, ${cov:-cov ?}), exit $rc")
  if [[ "${FUZZ_MERGE:-0}" == 1 && $rc == 0 ]]; then
    "$BIN/$t" -merge=1 -max_len=8192 "$seeds" "$work" >>"$log" 2>&1
  fi
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $status
