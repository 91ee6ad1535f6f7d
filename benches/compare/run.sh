#!/usr/bin/env bash
# The same debit in PostgreSQL, Redis and debitcore, on this machine, in one
# run. See README.md beside this file for what is compared and why.
#
#   benches/compare/run.sh                          # 1,000,000 accounts, 10 s a run
#   ACCOUNTS=100000 DURATION=5 benches/compare/run.sh   # a quick one
#
# Environment (defaults in brackets):
#   ACCOUNTS [1000000]  DURATION [10]  BALANCE [1000000000000 cents]
#   CLIENTS [2 x cores]  TRANSPORT [unix | tcp]
#   SYSTEMS [postgres redis debitcore]    which systems to run
#   PG_MODES [fn-durable fn-async txn-durable]   (also: txn-async)
#   REDIS_MODES [durable memory]
#   LOADGEN_IN_FLIGHT [default 1]
#   DEBITCORE_DIR [this checkout]
#   NO_INSTALL=1        never call apt-get (fail if something is missing)
#
# Installs what is missing from Debian packages (needs root), starts each
# server as a throwaway instance in a temp directory on a Unix socket (or
# 127.0.0.1), loads the accounts, runs, checks, stops, and removes the temp
# directory even when something fails. Ends with one table.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SYSTEMS=${SYSTEMS:-postgres redis debitcore}
PACKAGES=(postgresql postgresql-client postgresql-contrib redis-server redis-tools python3 python3-hiredis procps)

missing() {
    local what=()
    pg_bindir >/dev/null || what+=(initdb)
    { [ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/pgbench" ]; } || command -v pgbench >/dev/null || what+=(pgbench)
    for tool in redis-server redis-cli redis-benchmark uptime; do
        command -v "$tool" >/dev/null || what+=("$tool")
    done
    [ -x "$PYTHON" ] && "$PYTHON" -c 'import hiredis' 2>/dev/null || what+=("python3-hiredis")
    echo "${what[*]}"
}

install_if_missing() {
    local what
    what=$(missing)
    [ -n "$what" ] || return 0
    [ -z "${NO_INSTALL:-}" ] || die "missing: $what (and NO_INSTALL is set)"
    [ "$(id -u)" -eq 0 ] || die "missing: $what; run as root to install ${PACKAGES[*]}"
    log "missing: $what; installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    what=$(missing)
    [ -z "$what" ] || die "still missing after apt-get install: $what"
}

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/debit-compare.XXXXXX")
chmod 755 "$WORKDIR" # the postgres user must reach its subdirectory
RESULTS=$WORKDIR/results.tsv
export WORKDIR RESULTS ACCOUNTS DURATION BALANCE CLIENTS TRANSPORT
: >"$RESULTS"

cleanup() {
    local status=$?
    # The sub-scripts stop their own servers; this catches what a killed
    # sub-script left behind: only servers whose files are in WORKDIR.
    local data pidfile pid bindir
    bindir=$(pg_bindir 2>/dev/null || true)
    data=$WORKDIR/postgres/data
    if [ -f "$data/postmaster.pid" ] && [ -n "$bindir" ]; then
        as_postgres "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    for pidfile in "$WORKDIR"/redis/*/redis.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$WORKDIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_if_missing

uptime_start=$(uptime)
log "machine: $CORES cores; $(uptime)"
log "accounts $ACCOUNTS, balance $BALANCE cents each, $DURATION s a run, $CLIENTS clients, transport $TRANSPORT"

# Compile first, so the compiler does not run beside a measured server.
case " $SYSTEMS " in *" debitcore "*) "$COMPARE_DIR/debitcore.sh" build || true ;; esac

for system in $SYSTEMS; do
    case "$system" in
        postgres) "$COMPARE_DIR/postgres.sh" || log "postgres.sh failed (status $?)" ;;
        redis) "$COMPARE_DIR/redis.sh" || log "redis.sh failed (status $?)" ;;
        debitcore) "$COMPARE_DIR/debitcore.sh" run || log "debitcore.sh failed (status $?)" ;;
        *) die "unknown system '$system' in SYSTEMS" ;;
    esac
done
uptime_end=$(uptime)

echo
echo "== debits/s: $ACCOUNTS accounts, $DURATION s a run, $CLIENTS clients, $CORES cores, transport $TRANSPORT"
awk -F'\t' '
    { for (i = 1; i <= 5; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } cmd[NR] = $6 }
    END {
        split("system\tmode\tdebits/s\tcheck\tload1", head, "\t")
        for (i = 1; i <= 5; i++) if (length(head[i]) > w[i]) w[i] = length(head[i])
        line = sprintf("%-" w[1] "s  %-" w[2] "s  %" w[3] "s  %-" w[4] "s  %" w[5] "s  %s", head[1], head[2], head[3], head[4], head[5], "command")
        print line
        for (r = 1; r <= NR; r++)
            printf "%-" w[1] "s  %-" w[2] "s  %" w[3] "s  %-" w[4] "s  %" w[5] "s  %s\n", cell[r, 1], cell[r, 2], cell[r, 3], cell[r, 4], cell[r, 5], cmd[r]
    }' "$RESULTS"
echo
echo "load1 is the 1-minute load average when that run ended."
echo "uptime at start: $uptime_start"
echo "uptime at end:   $uptime_end"
if grep -q '	FAILED	' "$RESULTS"; then
    echo "some checks FAILED"
    exit 1
fi
