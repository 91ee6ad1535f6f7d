#!/usr/bin/env python3
"""Where the CPU time of one request goes, measured on a real loadgen run.

Runs the release loadgen under `perf record -e cpu-clock` (a software
clock: works where hardware counters do not, as on this VM), keeps the
samples of the steady part of the measured run (from 1 s after it starts
to 0.5 s before the last sample), sorts each sample into a bucket by thread
and symbol, and prints the CPU nanoseconds per request each bucket costs:
samples x sampling period / requests in the same window. The requests come
from loadgen's steady rate (its `--json` summary).

    benches/breakdown.py [LOADGEN ARGS...]        e.g. --durability none

Needs `perf` (Debian: linux-perf) and a release build of loadgen
(`cargo build --release -p loadgen`; `LOADGEN=path` runs another binary,
for a comparison). The sum of the buckets is the CPU a
request costs on this machine, producers' work included: the figure the
throughput of an N-core machine is bound by (N x 10^9 / sum requests/s).
"""

import json
import os
import re
import subprocess
import sys
import tempfile

FREQ_HZ = 1999
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.environ.get("LOADGEN") or os.path.join(ROOT, "target", "release", "loadgen")
# Producer threads are unnamed: the kernel calls them after the binary
# (its first 15 bytes).
PRODUCER = os.path.basename(LOADGEN)[:15]

# Kernel symbols of first touches of fresh anonymous memory (the kernel
# zeroes every page; on this VM the host faults it in too).
FRESH = (r"clear_page|folio_zero|page_fault|do_huge_pmd|get_page_from_freelist|"
         r"__alloc_pages|alloc_pages|rmqueue|prep_compound|handle_mm_fault|"
         r"__get_user_pages|populate|lru_add|folio_add")

# (bucket, thread prefix or None, symbol pattern): the first match wins.
RULES = [
    ("spare thread: next key table faulted in (kernel zeroing)",
     "debitcore-spare", FRESH),
    ("kernel: fresh memory, on a shard worker", "debitcore-shard", FRESH),
    ("kernel: fresh memory, on a producer", PRODUCER, FRESH),
    ("kernel: sleep and wake-up (futex, scheduler)", None,
     r"futex|schedule|try_to_wake_up|finish_task_switch|_raw_spin_unlock_irq|"
     r"ttwu|enqueue_task|dequeue_task|pick_next|update_curr|wake_up|"
     r"native_write_msr|irqentry_exit|exit_to_user_mode|__rseq|syscall_exit|"
     r"hrtimer|switch_mm|__switch_to|native_sched_clock|smp_call_function"),
    ("log: flusher thread (fdatasync, writeback)", "debitcore-flush", r"."),
    ("spare thread: next log segment written", "debitcore-spare", r"."),
    ("log: encode, checksum, copy (worker)", "debitcore-shard",
     r"debitcore::wal|crc32c|memmove|memcpy"),
    ("apply: index, account, key table", "debitcore-shard",
     r"debitcore::(shard|table|index|risk|limits|money)|hashbrown"),
    ("worker: batches, replies, queue", "debitcore-shard",
     r"debitcore::engine|crossbeam|parking_lot|Reply|SegQueue"),
    ("allocator (mimalloc)", None, r"\bmi_|_mi_|mimalloc"),
    ("producer: client hand-off", PRODUCER, r"debitcore::engine|crossbeam|parking_lot"),
    ("producer: the gateway's own work (loadgen)", PRODUCER,
     r"loadgen|hdrhistogram|hashbrown|clock_gettime|Timespec|Instant|WordHasher|"
     r"__rust_begin_short_backtrace"),
    ("kernel: other", None, r"\[k\]"),
]


def bucket_of(comm, sym):
    for name, thread, pattern in RULES:
        if thread is not None and not comm.startswith(thread):
            continue
        if re.search(pattern, sym):
            return name
    return "other (unattributed: " + comm.split("-")[0] + ")"


def main():
    args = sys.argv[1:]
    if not os.path.exists(LOADGEN):
        sys.exit("build it first: cargo build --release -p loadgen")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        report = os.path.join(tmp, "report.json")
        cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQ_HZ),
               "-o", data, LOADGEN, "--json", report] + args
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        script = subprocess.run(
            ["perf", "script", "-i", data, "-F", "comm,time,ip,sym,dso"],
            check=True, capture_output=True, text=True).stdout
        with open(report) as f:
            rep = json.load(f)
    samples = []
    for line in script.splitlines():
        m = re.match(r"\s*(\S+(?: \S+)?)\s+(\d+\.\d+):\s+\S+\s+(.*)$", line)
        if not m:
            continue
        comm, t, rest = m.group(1), float(m.group(2)), m.group(3)
        kernel = "kernel.kallsyms" in rest or "[unknown]" in rest and "[k]" in rest
        sym = re.sub(r"\s*\(.*\)\s*$", "", rest)
        if kernel:
            sym = "[k] " + sym
        samples.append((t, comm, sym))
    if not samples:
        sys.exit("perf recorded no samples")
    end = samples[-1][0]
    duration = float(rep["config"]["duration_s"])
    lo, hi = end - duration + 1.0, end - 0.5
    window = [(c, s) for t, c, s in samples if lo <= t <= hi]
    # Requests in the window: loadgen's steady rate times the window.
    rate = rep["summary"]["steady_requests_per_s"]
    requests = rate * (hi - lo)
    period_ns = 1e9 / FREQ_HZ
    buckets = {}
    tops = {}
    for comm, sym in window:
        b = bucket_of(comm, sym)
        buckets[b] = buckets.get(b, 0) + 1
        tops.setdefault(b, {})
        short = re.sub(r"<.*?>|::\{\{.*?\}\}|::h[0-9a-f]{16}", "", sym)[:60]
        tops[b][short] = tops[b].get(short, 0) + 1
    total = sum(buckets.values())
    print(f"loadgen {' '.join(args) or '(defaults)'}")
    print(f"steady window {hi - lo:.1f} s, {rate:,.0f} requests/s, "
          f"{total * period_ns / 1e9 / (hi - lo):.2f} cores busy, "
          f"{total * period_ns / requests:.0f} ns CPU per request")
    print(f"{'ns/request':>10} {'share':>6}  bucket (top symbols)")
    for b, n in sorted(buckets.items(), key=lambda kv: -kv[1]):
        ns = n * period_ns / requests
        top = sorted(tops[b].items(), key=lambda kv: -kv[1])[:3]
        names = ", ".join(f"{s} {100 * c / n:.0f}%" for s, c in top)
        print(f"{ns:10.0f} {100 * n / total:5.1f}%  {b}  ({names})")


if __name__ == "__main__":
    main()
