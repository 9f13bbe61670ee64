"""How late the event loop runs while the field log writes, fsyncs, rotates and gzips.

An asyncio loop runs a 1 ms ticker (its lateness is what a QUIC timer or a ping would suffer) and a
producer writing ROWS rows a second of ~110 bytes into DIR, with a small size cap so files rotate
(and are gzipped) every few seconds, fsync every second. Three ways, one after the other:
  none    no logging (the machine's own noise)
  queued  tsq.fieldlog.FieldLog: the loop only enqueues; a thread per directory writes and fsyncs,
          a SCHED_IDLE thread gzips
  inline  what format v1's writer did on the loop: write(2) per row, fsync on the loop every
          interval, and on rotation fsync + gzip on the loop
Prints per way: tick lateness p50 / p99 / p99.9 / max, the caller's time per write(), rotations.

    python3 benchmarks/fieldlog.py [--seconds 20] [--rows 5000] [--dir DIR] [--max-bytes 4000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from tsq.fieldlog import DEVICE_FIELDS, FieldLog
from tsq.fieldlog_files import compress, csv_line, day_of, file_name, fmt_value, header_bytes
from tsq.timefmt import utc_iso


class InlineLog:
    """v1's write path, on the caller's thread (for comparison only)."""

    def __init__(self, directory: str, fsync_interval_s: float, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync_interval_s, self.max_bytes = fsync_interval_s, max_bytes
        self.fd: Optional[int] = None
        self.path: Optional[Path] = None
        self.part = self.size = 0
        self.last_sync = time.monotonic()
        self.header = header_bytes("devices", DEVICE_FIELDS, "bench")

    def write(self, row: Dict[str, Any]) -> None:
        line = csv_line([fmt_value(row.get(f)) for f in DEVICE_FIELDS])
        if self.fd is None or self.size + len(line) > self.max_bytes:
            self._rotate()
        assert self.fd is not None
        os.write(self.fd, line)
        self.size += len(line)
        if time.monotonic() - self.last_sync >= self.fsync_interval_s:
            os.fsync(self.fd)
            self.last_sync = time.monotonic()

    def _rotate(self) -> None:
        old = self.path
        self.close()
        self.path = self.dir / file_name("devices", day_of(time.time_ns()), self.part)
        self.part += 1
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self.fd, self.header)
        self.size = len(self.header)
        if old is not None:
            compress(old)

    def close(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


async def run(way: str, directory: str, seconds: float, rows_per_s: int, max_bytes: int) -> Dict[str, Any]:
    log: Any = None
    if way == "queued":
        log = FieldLog(directory, "devices", fsync_interval_s=1.0, max_bytes=max_bytes, host_id="bench")
    elif way == "inline":
        log = InlineLog(directory, 1.0, max_bytes)
    late: List[float] = []
    write_s: List[float] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def ticker() -> None:
        while loop.time() < end:
            t = time.monotonic()
            await asyncio.sleep(0.001)
            late.append(time.monotonic() - t - 0.001)

    async def producer() -> None:
        burst = max(1, rows_per_s // 100)  # every 10 ms
        i = 0
        while loop.time() < end:
            if log is not None:
                for _ in range(burst):
                    now = time.time_ns()
                    row = {"time_utc": utc_iso(now), "raw_ns": time.monotonic_ns(), "device": "0xd0000001",
                           "state": "synchronised", "bound_ns": 18_000 + i % 977,
                           "residual_ns": i % 50_000 - 25_000, "line_delay_ns": 40_000 + i % 9973,
                           "poll_s": 0.25}
                    t = time.perf_counter()
                    log.write(row)
                    write_s.append(time.perf_counter() - t)
                    i += 1
            await asyncio.sleep(0.01)

    await asyncio.gather(ticker(), producer())
    if log is not None:
        log.close()
    files = [p for p in Path(directory).iterdir() if p.name.startswith("devices-")]
    late.sort()
    pick = lambda q: late[min(len(late) - 1, int(q * len(late)))] * 1e3  # noqa: E731
    return {"way": way, "ticks": len(late), "p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999),
            "max": late[-1] * 1e3, "write_us": statistics.mean(write_s) * 1e6 if write_s else 0.0,
            "rows": len(write_s), "gz": sum(p.name.endswith(".gz") for p in files)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rows", type=int, default=5000, help="rows per second")
    ap.add_argument("--max-bytes", type=int, default=4_000_000, help="size cap per file (rotation)")
    ap.add_argument("--dir", help="where to write (default: a temporary directory)")
    ap.add_argument("--ways", default="none,queued,inline")
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="tsq-fieldlog-bench-")
    print(f"{args.rows} rows/s for {args.seconds:g} s per way into {base}, files of "
          f"{args.max_bytes / 1e6:g} MB, fsync every 1 s; python {sys.version.split()[0]}")
    print(f"{'way':<8} {'ticks':>7} {'late p50':>9} {'p99':>8} {'p99.9':>8} {'max':>8} {'write()':>9} "
          f"{'rows':>8} {'gz files':>8}")
    try:
        for way in args.ways.split(","):
            d = os.path.join(base, way)
            os.makedirs(d, exist_ok=True)
            r = asyncio.run(run(way, d, args.seconds, args.rows, args.max_bytes))
            print(f"{r['way']:<8} {r['ticks']:>7} {r['p50']:>7.3f}ms {r['p99']:>6.2f}ms {r['p999']:>6.2f}ms "
                  f"{r['max']:>6.1f}ms {r['write_us']:>7.1f}µs {r['rows']:>8} {r['gz']:>8}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
