# shellcheck shell=bash
# Shared by run.sh, postgres.sh, redis.sh and debitcore.sh. Sourced, not run.
#
# Settings (all from the environment, with defaults):
#   ACCOUNTS   accounts loaded into every system          (1000000)
#   DURATION   seconds each measured run lasts            (10)
#   BALANCE    opening balance of every account, in cents (1000000000000)
#   CLIENTS    concurrent clients for pgbench/redis-benchmark (2 x cores)
#   TRANSPORT  unix (Unix-domain sockets) or tcp (127.0.0.1)  (unix)
#   WORKDIR    scratch directory; run.sh makes and removes one
#   RESULTS    file the result rows are appended to (tab-separated)

COMPARE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CORES=$(nproc)
ACCOUNTS=${ACCOUNTS:-1000000}
DURATION=${DURATION:-10}
BALANCE=${BALANCE:-1000000000000}
CLIENTS=${CLIENTS:-$((2 * CORES))}
TRANSPORT=${TRANSPORT:-unix}
PYTHON=${PYTHON:-/usr/bin/python3}

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$ACCOUNTS" in '' | *[!0-9]*) die "ACCOUNTS must be a positive integer" ;; esac
case "$DURATION" in '' | *[!0-9]*) die "DURATION must be a whole number of seconds" ;; esac
[ "$ACCOUNTS" -ge 1 ] || die "ACCOUNTS must be at least 1"
[ "$DURATION" -ge 1 ] || die "DURATION must be at least 1"
case "$TRANSPORT" in unix | tcp) ;; *) die "TRANSPORT must be unix or tcp" ;; esac

# A free TCP port on 127.0.0.1 (asked of the kernel, so two runs on a
# shared machine do not collide).
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

load1() { cut -d' ' -f1 /proc/loadavg; }

# record SYSTEM MODE DEBITS_PER_S CHECK COMMAND
# One row of the final table. CHECK is "ok", "FAILED" or "-".
record() {
    local results=${RESULTS:-/dev/stdout}
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(load1)" "$5" >>"$results"
}

# Runs a command as the postgres user when we are root (initdb and the
# server refuse to run as root), as ourselves otherwise.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] || return 1
    echo "$dir"
}

# The words of a command, quoted so that a shell reads them back the same.
shell_join() {
    local out="" word
    for word in "$@"; do out+="$(printf '%q' "$word") "; done
    printf '%s' "${out% }"
}
