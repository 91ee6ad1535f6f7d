#!/usr/bin/env bash
# debitcore's side: its own load generator, on the same machine, same
# accounts and duration, all debits.
#
#   debitcore.sh build   compile loadgen (before the servers run, so the
#                        compiler does not share the machine with them)
#   debitcore.sh run     run it and record its debits/s
#
# DEBITCORE_DIR is the checkout to use (default: the one this script is in).
# LOADGEN_DURABILITY lists the --durability modes (default "sync none").
# LOADGEN_IN_FLIGHT lists the --in-flight values to run (default "default 1":
# loadgen's own default, then CLIENTS producers with one request in flight
# each, which is how the pgbench and redis-benchmark -P 1 clients behave).
# Skips, with a message, when loadgen/src/main.rs is still a stub.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DEBITCORE_DIR=${DEBITCORE_DIR:-$(cd "$COMPARE_DIR/../.." && pwd)}
LOADGEN_IN_FLIGHT=${LOADGEN_IN_FLIGHT:-default 1}
main_rs=$DEBITCORE_DIR/loadgen/src/main.rs

# A stub is what branch main had before loadgen landed: nothing but an
# empty main (comments and blank lines aside).
is_stub() {
    [ -f "$main_rs" ] || return 0
    local code
    code=$(grep -vE '^\s*(//.*)?$' "$main_rs" | tr -d '[:space:]')
    [ "$code" = "fnmain(){}" ]
}

# skip SHORT LONG: the table gets SHORT, the log LONG.
# (Recorded by the run step only, so the row comes last in the table.)
skip() {
    log "debitcore: SKIPPED: $2"
    [ "$action" = build ] || record debitcore "skipped: $1" "-" "-" "-"
    exit 0
}

action=${1:-run}
is_stub && skip "loadgen is a stub here" \
    "$main_rs is only a stub: the load generator is not on this branch yet (merge the branch that has it, or set DEBITCORE_DIR to a checkout that has it, and rerun)"
command -v cargo >/dev/null || skip "no cargo" "cargo not found: install the Rust toolchain to run debitcore's side"
cd "$DEBITCORE_DIR"

case "$action" in
    build)
        log "debitcore: cargo build --release -p loadgen (in $DEBITCORE_DIR, target ${CARGO_TARGET_DIR:-target})"
        cargo build --release -p loadgen >"${WORKDIR:-/tmp}/loadgen-build.log" 2>&1 \
            || { tail -n 30 "${WORKDIR:-/tmp}/loadgen-build.log" >&2; die "building loadgen failed"; }
        ;;
    run)
        for durability in ${LOADGEN_DURABILITY:-sync none}; do
        for in_flight in $LOADGEN_IN_FLIGHT; do
            cmd=(cargo run --release -q -p loadgen -- --duration "$DURATION" --mix debit=100 --accounts "$ACCOUNTS" --durability "$durability")
            case $durability in
                sync) mode="durable (sync: outcome after fdatasync)" ;;
                *) mode="in memory (durability $durability)" ;;
            esac
            label="$mode, loadgen defaults (pipelined)"
            if [ "$in_flight" != default ]; then
                # As many producers as the servers get clients.
                cmd+=(--in-flight "$in_flight" --producers "$CLIENTS")
                label="$mode, $CLIENTS producers x --in-flight $in_flight"
            fi
            shown="(cd $(shell_join "$DEBITCORE_DIR") && $(shell_join "${cmd[@]}"))"
            log "debitcore: $label for ${DURATION}s"
            log "  $shown"
            out=${WORKDIR:-/tmp}/loadgen-$in_flight.log
            status=0
            "${cmd[@]}" >"$out" 2>&1 || status=$?
            grep -E '^\s+(requests|throughput|latency|outcomes|cpu)\b' "$out" || true
            rate=$(sed -nE 's/^\s+throughput .* ([0-9,]+) debit\/s.*/\1/p' "$out" | tr -d , | head -n 1)
            verdict=ok
            if [ "$status" -ne 0 ] || [ -z "$rate" ] || grep -q 'WARNING' "$out" \
                || ! grep -qE 'lost outcomes 0($|[^0-9])' "$out"; then
                verdict=FAILED
                tail -n 20 "$out" >&2
            fi
            echo "  check: loadgen exit status $status; wanted: status 0, lost outcomes 0, no replayed fresh ids -> $verdict"
            record debitcore "$label" "${rate:--}" "$verdict" "$shown"
        done
        done
        ;;
    *) die "usage: debitcore.sh build|run" ;;
esac
