#!/usr/bin/env bash
# Debits behind HTTP: the gateway (examples/gateway) under wrk over loopback.
#
#   benches/http.sh [RUNS] [SECONDS]        (defaults: 3 runs, 10 s each)
#
# Modes, interleaved run by run: `memory` (the engine in memory), `durable`
# (a fresh data directory, --durability sync), `none` (--engine none: the
# same HTTP parsing and answers, no engine: what HTTP alone costs). Each run
# starts a fresh gateway, opens and funds ACCOUNTS accounts, then runs wrk
# with CONNECTIONS keep-alive connections on THREADS threads for SECONDS,
# every request a debit with its own Idempotency-Key (benches/http/debits.lua).
# Prints debits/s, p50 and p99 per run, then the median of each mode.
#
# Needs wrk (`apt-get install -y wrk`) and curl. Environment: ACCOUNTS
# (1000), CONNECTIONS (32), THREADS (1), GATEWAY_ARGS (extra gateway flags).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
seconds=${2:-10}
accounts=${ACCOUNTS:-1000}
connections=${CONNECTIONS:-32}
threads=${THREADS:-1}
modes=(memory durable none)

for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "benches/http.sh: needs $tool (apt-get install -y $tool)"; exit 2; }
done

cargo build --release -q -p gateway
bin=target/release/gateway
scratch=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# Starts the gateway in mode $1; sets pid and base.
start() {
    local args=(--listen 127.0.0.1:0)
    case $1 in
        memory) ;;
        durable) rm -rf "$scratch/data"; args+=(--data-dir "$scratch/data") ;;
        none) args+=(--engine none) ;;
    esac
    # shellcheck disable=SC2086
    "$bin" "${args[@]}" ${GATEWAY_ARGS:-} >"$scratch/out" 2>"$scratch/err" &
    pid=$!
    for _ in $(seq 1 500); do
        base=$(sed -n 's/^listening on //p' "$scratch/out")
        [ -n "$base" ] && return 0
        sleep 0.02
    done
    echo "gateway did not start:"; cat "$scratch/err"; exit 1
}

stop() {
    kill -TERM "$pid"
    wait "$pid" || { echo "gateway exited with $?:"; cat "$scratch/err"; exit 1; }
    pid=
}

# Opens and funds accounts 1..ACCOUNTS over one keep-alive connection.
fund() {
    local config=$scratch/fund.curl
    : >"$config"
    for a in $(seq 1 "$accounts"); do
        [ "$a" -gt 1 ] && echo next >>"$config"
        printf 'url = "%s/accounts"\ndata = "{\\"account\\":%d,\\"currency\\":\\"USD\\"}"\noutput = "/dev/null"\nnext\n' "$base" "$a" >>"$config"
        printf 'url = "%s/accounts/%d/deposits"\nheader = "Idempotency-Key: 1"\ndata = "{\\"amount\\":\\"1000000000\\"}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$base" "$a" >>"$config"
    done
    local ok
    ok=$(curl -s -K "$config" | grep -c '^200$' || true)
    [ "$ok" -eq "$accounts" ] || { echo "funding: $ok of $accounts deposits ok"; exit 1; }
}

declare -A rates p50s p99s
echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD) $(nproc) cores; uptime:$(uptime | sed 's/.*load average/ load average/')"
echo "== wrk -t$threads -c$connections -d${seconds}s, $accounts accounts, runs interleaved"
for run in $(seq 1 "$runs"); do
    for mode in "${modes[@]}"; do
        start "$mode"
        fund
        line=$(ACCOUNTS=$accounts wrk -t"$threads" -c"$connections" -d"${seconds}s" \
            -s benches/http/debits.lua "$base" | grep '^RESULT')
        stop
        # RESULT requests=N elapsed=S non2xx=N errors=N p50_us=X p99_us=Y
        read -r requests elapsed non2xx errors p50_us p99_us \
            < <(echo "$line" | sed -E 's/^RESULT //; s/[a-z0-9_]+=//g')
        [ "$non2xx" -eq 0 ] && [ "$errors" -eq 0 ] || { echo "$mode: $line"; exit 1; }
        rate=$(awk -v n="$requests" -v s="$elapsed" 'BEGIN { printf "%d", n / s }')
        rates[$mode]+="$rate "
        p50s[$mode]+="$p50_us "
        p99s[$mode]+="$p99_us "
        printf '%-8s run %d: %8d debits/s  p50 %6d us  p99 %6d us  (load%s)\n' \
            "$mode" "$run" "$rate" "$p50_us" "$p99_us" "$(uptime | sed 's/.*load average://')"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "== medians of $runs runs"
printf '%-8s %10s %8s %8s\n' mode debits/s p50_us p99_us
for mode in "${modes[@]}"; do
    printf '%-8s %10s %8s %8s\n' "$mode" "$(echo "${rates[$mode]}" | median)" \
        "$(echo "${p50s[$mode]}" | median)" "$(echo "${p99s[$mode]}" | median)"
done
