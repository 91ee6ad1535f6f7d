#!/usr/bin/env bash
# The debit in Redis: debit.lua by EVALSHA, driven by redis-benchmark.
# Usually called by run.sh; runs alone too.
#
# One throwaway redis-server per mode, in a temp directory, listening only
# on a Unix socket there (TRANSPORT=unix) or on 127.0.0.1 (TRANSPORT=tcp):
#   durable  --appendonly yes --appendfsync always  (fsync before each reply batch)
#   memory   --appendonly no                        (in memory only)
# Both with --save '' (no snapshots during the run). Loads ACCOUNTS
# accounts, runs redis-benchmark for DURATION seconds, counts the EVALSHA
# calls the server answered, and checks the balances without Lua.
#
# REDIS_MODES chooses the runs (default "durable memory").
set -euo pipefail
. "$(dirname "$0")/lib.sh"

REDIS_MODES=${REDIS_MODES:-durable memory}
for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || die "$tool not found (run.sh installs it)"
done
"$PYTHON" -c 'import hiredis' 2>/dev/null || die "$PYTHON cannot import hiredis (python3-hiredis)"

own_workdir=""
if [ -z "${WORKDIR:-}" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/debit-compare.XXXXXX")
    own_workdir=$WORKDIR
fi
RDIR=$WORKDIR/redis
mkdir -p "$RDIR"
server_pid=""

stop_server() {
    [ -n "$server_pid" ] || return 0
    "${cli[@]}" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
cleanup() {
    stop_server
    if [ -n "$own_workdir" ]; then rm -rf "$own_workdir"; else rm -rf "$RDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Accounts, made on the server in chunks (one script call per chunk, so
# the durable instance writes and fsyncs its AOF once per chunk):
#   HSET acct:<account, 12 digits> b <balance> h 0
# (12 digits because redis-benchmark's __rand_int__ is 12 digits.)
LOAD_LUA="for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
    redis.call('HSET', string.format('acct:%012d', i), 'b', ARGV[3], 'h', '0')
end
return 0"
load_accounts() {
    local first last chunk=50000
    for ((first = 0; first < ACCOUNTS; first += chunk)); do
        last=$((first + chunk - 1))
        ((last < ACCOUNTS)) || last=$((ACCOUNTS - 1))
        "${cli[@]}" eval "$LOAD_LUA" 0 "$first" "$last" "$BALANCE" >/dev/null
    done
}

evalsha_calls() {
    "${cli[@]}" info commandstats | sed -nE 's/^cmdstat_evalsha:calls=([0-9]+),.*/\1/p' | grep . || echo 0
}

for mode in $REDIS_MODES; do
    case "$mode" in
        durable) persist=(--appendonly yes --appendfsync always) label="appendfsync always" ;;
        memory) persist=(--appendonly no) label="appendonly no (in memory)" ;;
        *) die "unknown REDIS_MODES entry '$mode'" ;;
    esac
    dir=$RDIR/$mode
    mkdir -p "$dir"
    if [ "$TRANSPORT" = tcp ]; then
        port=$(free_port)
        listen=(--bind 127.0.0.1 --port "$port")
        conn=(-h 127.0.0.1 -p "$port")
        checkconn=(--port "$port")
    else
        listen=(--port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700)
        conn=(-s "$dir/redis.sock")
        checkconn=(--socket "$dir/redis.sock")
    fi
    cli=(redis-cli "${conn[@]}")
    server=(redis-server "${listen[@]}" --dir "$dir" --save '' "${persist[@]}" --daemonize no
        --pidfile "$dir/redis.pid" --logfile "$dir/server.log")
    log "redis: $(shell_join "${server[@]}")"
    "${server[@]}" &
    server_pid=$!
    for _ in $(seq 100); do "${cli[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done
    "${cli[@]}" ping >/dev/null 2>&1 || { tail -n 20 "$dir/server.log" >&2; die "redis-server did not start"; }

    log "redis: loading $ACCOUNTS accounts"
    t0=$(date +%s.%N)
    load_accounts
    keys=$("${cli[@]}" dbsize)
    [ "$keys" = "$ACCOUNTS" ] || die "loading failed: $keys keys for $ACCOUNTS accounts"
    log "redis: loaded in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
    sha=$("${cli[@]}" -x script load <"$COMPARE_DIR/debit.lua")

    # redis-benchmark counts requests, not time: ask for more than can be
    # done and stop it after DURATION seconds; the server's own count of
    # answered EVALSHA calls over the measured wall time is the figure.
    # Every __rand_int__ is an independent number in 0 .. ACCOUNTS-1:
    # account, id (two of them: ACCOUNTS^2 ids), amount (0 is invalid).
    bench=(redis-benchmark "${conn[@]}" -c "$CLIENTS" -P 1 -r "$ACCOUNTS" -n 2000000000
        EVALSHA "$sha" 1 'acct:__rand_int__' '__rand_int____rand_int__' '__rand_int__')
    shown="timeout -s INT $DURATION $(shell_join "${bench[@]}")"
    log "redis: $label for ${DURATION}s"
    log "  $shown"
    before=$(evalsha_calls)
    t0=$(date +%s.%N)
    timeout -s INT "$DURATION" "${bench[@]}" >"$dir/bench.log" 2>&1 || true
    t1=$(date +%s.%N)
    sleep 0.2 # let replies to the last requests be counted
    after=$(evalsha_calls)
    errors=$("${cli[@]}" info errorstats | grep -c '^errorstat' || true)
    calls=$((after - before))
    rate=$(awk -v n="$calls" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    printf '  %s EVALSHA calls answered in %.2f s: %s debits/s; %s error kinds reported\n' \
        "$calls" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$rate" "$errors"
    if [ "$errors" != 0 ]; then "${cli[@]}" info errorstats >&2; tail -n 5 "$dir/bench.log" >&2; fi
    if "$PYTHON" "$COMPARE_DIR/check_redis.py" "${checkconn[@]}" "$ACCOUNTS" "$BALANCE"; then
        verdict=ok
    else
        verdict=FAILED
    fi
    [ "$calls" -gt 0 ] || { verdict=FAILED; tail -n 20 "$dir/bench.log" >&2; }
    record redis "$label" "$rate" "$verdict" "$(shell_join "${server[@]:0:$((${#server[@]} - 6))}") & $shown"
    stop_server
done
