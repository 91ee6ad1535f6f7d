#!/usr/bin/env bash
# Instruction-count regression check (see benches/icount/README.md).
#
# Counts the instructions (callgrind's Ir) each workload of
# examples/icount.rs spends per unit, and fails if any is more than
# ICOUNT_TOLERANCE_PCT (default 3) percent above benches/icount/baseline.txt.
#
#   benches/icount/check.sh            compare with the baseline (CI)
#   benches/icount/check.sh --update   measure and rewrite the baseline
#
# Exit status: 0 within tolerance (or baseline written), 1 a regression or a
# workload without a baseline, 2 could not measure (build, valgrind, a
# workload failing, bad arguments or baseline).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BASELINE=benches/icount/baseline.txt
# Gated workloads. engine_debit exists but is not gated (two threads: its
# count depends on scheduling; README.md). log_record: add it here once the
# write-ahead log exists, then run --update.
WORKLOADS=(debit debit_merchant debit_history debit_limited authorize_capture log_record)
# Units per run. Setup is identical for every N, so the difference of two
# runs divided by N2 - N1 is the cost of one unit. N2 <= 200000 (the
# example's UNITS_MAX). Changing either means a new baseline.
N1=20000
N2=120000
TOLERANCE_PCT="${ICOUNT_TOLERANCE_PCT:-3}"
# More than this much below the baseline: say it is time to refresh it.
REFRESH_BELOW_PCT=10
# Callgrind runs at once (each is single-threaded; counts do not depend on it).
JOBS="${ICOUNT_JOBS:-2}"

die() {
    echo "icount: error: $*" >&2
    exit 2
}

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

update=false
case "${1:-}" in
    "") ;;
    --update) update=true ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
[ $# -le 1 ] || {
    usage >&2
    exit 2
}
[[ "$TOLERANCE_PCT" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    die "ICOUNT_TOLERANCE_PCT must be a number of percent, like 3 or 2.5 (got '$TOLERANCE_PCT')"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "ICOUNT_JOBS must be a positive whole number (got '$JOBS')"

# --- baseline -----------------------------------------------------------------
baseline_field() { # key -> rest of the line
    [ -f "$BASELINE" ] || return 0
    awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$BASELINE"
}
baseline_of() { # workload -> Ir/unit or nothing
    [ -f "$BASELINE" ] || return 0
    awk -v w="$1" '$1 == "workload" && $2 == w { print $3; exit }' "$BASELINE"
}

if ! $update; then
    [ -f "$BASELINE" ] || die "no baseline at $BASELINE: make one with benches/icount/check.sh --update"
    baseline_sizes="$(baseline_field sizes)"
    [ "$baseline_sizes" = "$N1 $N2" ] ||
        die "the baseline was measured at sizes '$baseline_sizes', this script uses '$N1 $N2': run --update"
fi

started=$SECONDS

# --- valgrind -----------------------------------------------------------------
if ! command -v valgrind >/dev/null 2>&1; then
    echo "icount: valgrind is not installed; installing it with apt-get" >&2
    command -v apt-get >/dev/null 2>&1 || die "no valgrind and no apt-get to install it with"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "no valgrind, and installing it needs root (or sudo)"
        sudo=(sudo)
    fi
    ${sudo[@]+"${sudo[@]}"} apt-get update -qq || die "apt-get update failed"
    ${sudo[@]+"${sudo[@]}"} apt-get install -y valgrind >/dev/null || die "apt-get install valgrind failed"
    command -v valgrind >/dev/null 2>&1 || die "valgrind still not found after installing it"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found"

rustc_version="$(rustc --version)"
valgrind_version="$(valgrind --version)"

# --- build --------------------------------------------------------------------
echo "icount: building the workload runner (cargo build --release --example icount)" >&2
build_json="$(cargo build --release -p debitcore --example icount \
    --message-format=json-render-diagnostics)" || die "cargo build failed (messages above)"
bin="$(printf '%s\n' "$build_json" | sed -n 's/.*"executable":"\([^"]*\/icount\)".*/\1/p' | tail -n 1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    die "cargo build did not report the icount executable"
fi

# Callgrind files stay next to the binary (inside the target directory) for
# `callgrind_annotate` after a run.
out_dir="$(dirname "$bin")/icount-callgrind"
mkdir -p "$out_dir"
rm -f "$out_dir"/*

# --- measure ------------------------------------------------------------------
run_one() { # workload n
    local base="$out_dir/$1.$2"
    local rc=0
    valgrind --tool=callgrind --callgrind-out-file="$base.out" --log-file="$base.valgrind.log" \
        "$bin" "$1" "$2" >"$base.stdout" 2>"$base.stderr" || rc=$?
    echo "$rc" >"$base.rc"
}

echo "icount: counting ${WORKLOADS[*]} at N=$N1 and N=$N2 under callgrind ($JOBS at a time)" >&2
for workload in "${WORKLOADS[@]}"; do
    for n in "$N1" "$N2"; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
            wait -n || true
        done
        run_one "$workload" "$n" &
    done
done
wait

instructions() { # workload n -> Ir of the whole run
    local base="$out_dir/$1.$2"
    local rc
    rc="$(cat "$base.rc" 2>/dev/null || echo "?")"
    if [ "$rc" != 0 ]; then
        echo "icount: error: workload $1 N=$2 failed (exit $rc) under valgrind:" >&2
        cat "$base.stderr" "$base.valgrind.log" >&2 2>/dev/null || true
        exit 2
    fi
    local ir
    ir="$(awk '/^totals:/ { print $2; exit }' "$base.out")"
    [[ "$ir" =~ ^[0-9]+$ ]] || die "no instruction total in $base.out"
    echo "$ir"
}

declare -A per_unit
for workload in "${WORKLOADS[@]}"; do
    ir1="$(instructions "$workload" "$N1")"
    ir2="$(instructions "$workload" "$N2")"
    per_unit[$workload]="$(awk -v a="$ir1" -v b="$ir2" -v n1="$N1" -v n2="$N2" \
        'BEGIN { printf "%.2f", (b - a) / (n2 - n1) }')"
done

# --- report -------------------------------------------------------------------
print_table() {
    printf '%-20s %10s %10s %9s  %s\n' workload Ir/unit baseline change status
    local workload base change status
    for workload in "${WORKLOADS[@]}"; do
        base="$(baseline_of "$workload")"
        if [ -z "$base" ]; then
            printf '%-20s %10s %10s %9s  %s\n' "$workload" "${per_unit[$workload]}" - - \
                "$( $update && echo new || echo 'NO BASELINE' )"
            continue
        fi
        change="$(awk -v c="${per_unit[$workload]}" -v b="$base" 'BEGIN { printf "%+.2f", (c - b) / b * 100 }')"
        status="$(awk -v x="$change" -v tol="$TOLERANCE_PCT" -v low="$REFRESH_BELOW_PCT" 'BEGIN {
            if (x > tol) print "REGRESSION (over +" tol "%)";
            else if (x < -low) print "ok, well below: refresh the baseline";
            else print "ok" }')"
        printf '%-20s %10s %10s %8s%%  %s\n' "$workload" "${per_unit[$workload]}" "$base" "$change" "$status"
    done
}

if $update; then
    print_table
    tmp="$(mktemp "$BASELINE.XXXXXX")"
    {
        echo "# Instructions (callgrind Ir) per unit of each workload of examples/icount.rs,"
        echo "# (Ir(N2) - Ir(N1)) / (N2 - N1). Written by benches/icount/check.sh --update;"
        echo "# see benches/icount/README.md. Counts depend on the compiler: rustc is recorded."
        echo "rustc $rustc_version"
        echo "valgrind $valgrind_version"
        echo "sizes $N1 $N2"
        for workload in "${WORKLOADS[@]}"; do
            echo "workload $workload ${per_unit[$workload]}"
        done
    } >"$tmp"
    mv "$tmp" "$BASELINE"
    echo "icount: wrote $BASELINE ($rustc_version) in $((SECONDS - started)) s"
    exit 0
fi

# A different compiler gives different counts (a few percent either way is
# common). Decision: compare anyway and say so loudly. Skipping would turn
# the check off silently until someone noticed; failing after a toolchain
# change is the cue to refresh the baseline in the same change (--update).
baseline_rustc="$(baseline_field rustc)"
rustc_differs=false
if [ "$baseline_rustc" != "$rustc_version" ]; then
    rustc_differs=true
    echo "icount: WARNING: ======================================================" >&2
    echo "icount: WARNING: the baseline was made with: $baseline_rustc" >&2
    echo "icount: WARNING: this build uses:            $rustc_version" >&2
    echo "icount: WARNING: counts may differ for that reason alone; comparing anyway." >&2
    echo "icount: WARNING: ======================================================" >&2
fi

print_table
failed=()
for workload in "${WORKLOADS[@]}"; do
    base="$(baseline_of "$workload")"
    if [ -z "$base" ]; then
        failed+=("$workload (no baseline)")
        continue
    fi
    if awk -v c="${per_unit[$workload]}" -v b="$base" -v tol="$TOLERANCE_PCT" \
        'BEGIN { exit !((c - b) / b * 100 > tol) }'; then
        failed+=("$workload")
    fi
done
for workload in "${WORKLOADS[@]}"; do
    base="$(baseline_of "$workload")"
    [ -n "$base" ] || continue
    if awk -v c="${per_unit[$workload]}" -v b="$base" -v low="$REFRESH_BELOW_PCT" \
        'BEGIN { exit !((c - b) / b * 100 < -low) }'; then
        echo "icount: note: $workload is more than $REFRESH_BELOW_PCT% below its baseline;" \
            "refresh the baseline (--update) so later regressions are caught from here"
    fi
done

elapsed=$((SECONDS - started))
if [ ${#failed[@]} -gt 0 ]; then
    echo "icount: FAILED: instructions per unit over the baseline by more than $TOLERANCE_PCT%:" \
        "${failed[*]}" >&2
    $rustc_differs && echo "icount: (the compiler differs from the baseline's; see the warning above)" >&2
    echo "icount: profiles: $out_dir (callgrind_annotate --auto=no FILE.out);" \
        "if the cost is intended, run benches/icount/check.sh --update and commit the baseline" >&2
    exit 1
fi
echo "icount: ok: every workload within +$TOLERANCE_PCT% of its baseline ($elapsed s)"
