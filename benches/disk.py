#!/usr/bin/env python3
"""The disk's own limits, for judging the durable figures: fdatasync latency
as the log sees it (records written through a mapping into a preallocated
segment, then fdatasync: what one group commit costs at least), the same
for appends that grow a file (metadata too: for contrast), and sequential
write bandwidth (what the log can stream).

Then what PERF.md's "Durable latency" found: the same small sync once 40 MB
of the segment were written through the mapping, without and with
MADV_RANDOM (readahead grows the page cache's folios to 2 MiB, and a dirty
folio is written back whole), and a segment whose extents were written with
zeros first (no unwritten-extent conversion per sync), with the device
writes each sync costs. Usage: benches/disk.py [DIR]"""
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

    def device_writes():
        """Completed writes of the device holding `directory`, if found."""
        dev = os.stat(directory).st_dev
        try:
            with open("/sys/dev/block/%d:%d/stat" % (os.major(dev), os.minor(dev))) as f:
                return int(f.read().split()[4])
        except OSError:
            return None

    def small_syncs(prefill, advice, zeroed):
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC)
        os.posix_fallocate(fd, 0, size)
        if zeroed:
            page = b"\0" * 4096
            for at in range(0, size, 4096):
                os.pwrite(fd, page, at)
        os.fsync(fd)
        segment = mmap.mmap(fd, size)
        if advice:
            segment.madvise(mmap.MADV_RANDOM)
        offset = 0
        while offset < prefill:
            segment[offset:offset + 200_000] = b"s" * 200_000
            offset += 200_000
            os.fdatasync(fd)
        before, latencies = device_writes(), []
        for _ in range(300):
            segment[offset:offset + 96] = b"r" * 96  # two records
            offset += 96
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - started) * 1e6)
        after = device_writes()
        segment.close()
        os.close(fd)
        latencies.sort()
        writes = "%.2f" % ((after - before) / 300) if before is not None else "?"
        return latencies[150], latencies[297], writes

    for label, prefill, advice, zeroed in [
        ("fallocated, fresh", 0, False, False),
        ("fallocated, 40 MB written before", 40 << 20, False, False),
        ("fallocated, 40 MB written before, MADV_RANDOM", 40 << 20, True, False),
        ("zero-filled, 40 MB written before, MADV_RANDOM", 40 << 20, True, True),
    ]:
        p50, p99, writes = small_syncs(prefill, advice, zeroed)
        print("fdatasync of 96 bytes through a mapping, %s: p50 %.0f us, p99 %.0f us,"
              " %s device writes per sync" % (label, p50, p99, writes))

    # Two writers syncing back to back, as two shards' flushers do under
    # load: on this VM the device's rate limit shows as ~17 ms stalls every
    # 100 ms once both together pass ~8k syncs/s.
    def sync_loop(name, seconds, out):
        fd = os.open(name, os.O_CREAT | os.O_RDWR | os.O_TRUNC)
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
        segment = mmap.mmap(fd, size)
        segment.madvise(mmap.MADV_RANDOM)
        offset, count, slow = 0, 0, 0
        end = time.time() + seconds
        while time.time() < end:
            segment[offset:offset + 96] = b"r" * 96
            offset += 96
            started = time.perf_counter()
            os.fdatasync(fd)
            count += 1
            slow += (time.perf_counter() - started) > 0.010
        segment.close()
        os.close(fd)
        os.unlink(name)
        os.write(out, b"%d %d\n" % (count, slow))

    for writers in (1, 2):
        read_end, write_end = os.pipe()
        children = []
        for w in range(writers):
            pid = os.fork()
            if pid == 0:
                sync_loop("%s-%d" % (path, w), 2.0, write_end)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        os.close(write_end)
        with os.fdopen(read_end) as results:
            pairs = [tuple(map(int, line.split())) for line in results]
        print("%d writer(s) syncing 96 bytes back to back for 2 s: %d syncs/s in all,"
              " %d syncs over 10 ms" % (writers, sum(c for c, _ in pairs) / 2,
                                        sum(s for _, s in pairs)))
finally:
    os.unlink(path)
