#!/usr/bin/env python3
"""The disk's own limits, for judging the durable figures: fdatasync latency
as the log sees it (records written through a mapping into a preallocated
segment, then fdatasync: what one group commit costs at least), the same
for appends that grow a file (metadata too: for contrast), and sequential
write bandwidth (what the log can stream). Usage: benches/disk.py [DIR]"""
import mmap
import os
import sys
import tempfile
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "."
path = tempfile.mktemp(prefix="debitcore-disk-", dir=directory)
try:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    latencies = []
    for _ in range(300):
        os.write(fd, b"x" * 4096)
        started = time.perf_counter()
        os.fdatasync(fd)
        latencies.append((time.perf_counter() - started) * 1e6)
    os.close(fd)
    latencies.sort()
    print("fdatasync after a 4 KiB append that grows the file: p50 %.0f us, p99 %.0f us"
          % (latencies[150], latencies[297]))
    size = 64 << 20
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC)
    os.posix_fallocate(fd, 0, size)
    os.fsync(fd)
    segment = mmap.mmap(fd, size)
    latencies = []
    for i in range(300):
        segment[i * 2400:(i + 1) * 2400] = b"r" * 2400  # 50 records of 48 bytes
        started = time.perf_counter()
        os.fdatasync(fd)
        latencies.append((time.perf_counter() - started) * 1e6)
    segment.close()
    os.close(fd)
    latencies.sort()
    print("fdatasync after 2,400 bytes written through a mapping of a fallocated"
          " segment (the log's pattern): p50 %.0f us, p99 %.0f us"
          % (latencies[150], latencies[297]))
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    block = b"y" * (1 << 20)
    started = time.perf_counter()
    for _ in range(512):
        os.write(fd, block)
    os.fdatasync(fd)
    os.close(fd)
    print("sequential write of 512 MiB + fdatasync: %.0f MB/s"
          % (512 * 1.048576 / (time.perf_counter() - started)))
finally:
    os.unlink(path)
