#!/usr/bin/env bash
# The debit in PostgreSQL, driven by pgbench. Usually called by run.sh;
# runs alone too (it makes and removes its own scratch directory then).
#
# A throwaway cluster (initdb + pg_ctl as the postgres user) in a temp
# directory, listening only on a Unix socket there (TRANSPORT=unix) or on
# 127.0.0.1 (TRANSPORT=tcp). Loads ACCOUNTS accounts, then one pgbench run
# of DURATION seconds per mode:
#   fn   durable  SELECT debit(...) (debit.sql), synchronous_commit=on
#   fn   async    the same with synchronous_commit=off
#   txn  durable  BEGIN/INSERT/UPDATE/COMMIT (debit_txn.sql), synchronous_commit=on
# After each run, checks that the balances went down by exactly the sum of
# the successful debits the idempotency table records.
#
# PG_MODES chooses the runs (default "fn-durable fn-async txn-durable").
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PG_MODES=${PG_MODES:-fn-durable fn-async txn-durable}
PGBIN=$(pg_bindir) || die "PostgreSQL is not installed (run.sh installs it)"
PGBENCH=$PGBIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench) || die "pgbench not found"

own_workdir=""
if [ -z "${WORKDIR:-}" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/debit-compare.XXXXXX")
    chmod 755 "$WORKDIR"
    own_workdir=$WORKDIR
fi
PGDIR=$WORKDIR/postgres
PGDATA=$PGDIR/data
PGSOCK=$PGDIR # the socket lives here whichever the transport
mkdir -p "$PGDIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$PGDIR"

cleanup() {
    if [ -f "$PGDATA/postmaster.pid" ]; then
        log "postgres: stopping the throwaway cluster"
        as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$own_workdir" ]; then rm -rf "$own_workdir"; else rm -rf "$PGDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$TRANSPORT" = tcp ]; then
    PGPORT=$(free_port)
    listen=127.0.0.1
    conn=(-h 127.0.0.1 -p "$PGPORT")
else
    PGPORT=5432 # only names the socket file, in our private directory
    listen=""
    conn=(-h "$PGSOCK" -p "$PGPORT")
fi
conn+=(-U postgres)

log "postgres: initdb in $PGDATA ($("$PGBIN/postgres" --version))"
as_postgres "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$PGDIR/initdb.log" 2>&1 \
    || { cat "$PGDIR/initdb.log" >&2; die "initdb failed"; }

# Durable defaults (fsync, synchronous_commit, full_page_writes all on);
# memory and checkpoints sized so a short run measures debits, not a
# checkpoint that happens to fall inside it.
cat >>"$PGDATA/postgresql.conf" <<EOF

# debitcore benches/compare
listen_addresses = '$listen'
port = $PGPORT
unix_socket_directories = '$PGSOCK'
max_connections = $((CLIENTS + 20))
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
fsync = on
synchronous_commit = on
full_page_writes = on
EOF

as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDIR/server.log" -w -t 60 start >/dev/null \
    || { tail -n 30 "$PGDIR/server.log" >&2; die "PostgreSQL did not start"; }

psql_q() { "$PGBIN/psql" "${conn[@]}" -X -q -v ON_ERROR_STOP=1 -d bench "$@"; }
"$PGBIN/createdb" "${conn[@]}" bench

log "postgres: loading $ACCOUNTS accounts"
t0=$(date +%s.%N)
psql_q -v accounts="$ACCOUNTS" -v balance="$BALANCE" -f "$COMPARE_DIR/schema.sql" >/dev/null
log "postgres: loaded in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"

# Prints the check and returns 1 if it fails. $1: transactions pgbench
# counted, $2: idempotency rows before the run.
check() {
    local processed=$1 keys_before=$2 line decrease debited ok rejected keys
    line=$(psql_q -At -F ' ' -c "
        SELECT (SELECT initial_total FROM meta) - (SELECT sum(balance) FROM accounts),
               coalesce(sum(amount) FILTER (WHERE ok), 0),
               count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok), count(*)
        FROM idem")
    read -r decrease debited ok rejected keys <<<"$line"
    local verdict=ok
    [ "$decrease" = "$debited" ] || verdict=FAILED
    printf '  check: balances went down by %s; idem records %s successful debits totalling %s (%s rejected); %s -> %s\n' \
        "$decrease" "$ok" "$debited" "$rejected" "$( [ "$verdict" = ok ] && echo "equal" || echo "NOT EQUAL")" "$verdict"
    printf '  keys:  %s new idempotency keys for %s transactions (the rest are replays, conflicts or invalid amounts)\n' \
        "$((keys - keys_before))" "$processed"
    CHECK=$verdict
}

for mode in $PG_MODES; do
    case "$mode" in
        fn-durable) script=debit.sql label="function, synchronous_commit=on" pgoptions="" ;;
        fn-async) script=debit.sql label="function, synchronous_commit=off" pgoptions="-c synchronous_commit=off" ;;
        txn-durable) script=debit_txn.sql label="4-statement txn, synchronous_commit=on" pgoptions="" ;;
        txn-async) script=debit_txn.sql label="4-statement txn, synchronous_commit=off" pgoptions="-c synchronous_commit=off" ;;
        *) die "unknown PG_MODES entry '$mode'" ;;
    esac
    psql_q -c CHECKPOINT
    keys_before=$(psql_q -At -c "SELECT count(*) FROM idem")
    cmd=("$PGBENCH" -n -M prepared -c "$CLIENTS" -j "$CORES" -T "$DURATION" -D "accounts=$ACCOUNTS"
        -f "$COMPARE_DIR/$script" "${conn[@]}" bench)
    shown="${pgoptions:+PGOPTIONS='$pgoptions' }$(shell_join "${cmd[@]}")"
    log "postgres: $label for ${DURATION}s"
    log "  $shown"
    out=$PGDIR/pgbench-$mode.log
    if ! PGOPTIONS="$pgoptions" "${cmd[@]}" >"$out" 2>&1; then
        cat "$out" >&2
        record postgresql "$label" "-" FAILED "$shown"
        continue
    fi
    grep -E '^(number of (transactions|failed)|latency average|tps)' "$out" | sed 's/^/  /'
    tps=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$out" | head -n 1)
    processed=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$out")
    check "$processed" "$keys_before"
    record postgresql "$label" "$(printf '%.0f' "$tps")" "$CHECK" "$shown"
done
