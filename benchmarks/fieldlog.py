"""How late the event loop runs while the field log writes, fsyncs, rotates and gzips.

An asyncio loop runs a 1 ms ticker (its lateness is what a QUIC timer or a ping would suffer) and a
producer writing ROWS rows a second (~110 bytes each, fsync every second) into DIR. Before the
measured run, yesterday's file is filled with MB megabytes of rows (not timed); the first measured
row belongs to today, so the run starts with a day rotation and the gzip of that file. Three ways:
  none    no logging (the machine's own noise)
  queued  tsq.fieldlog.FieldLog: the loop only enqueues; a thread per directory writes and fsyncs,
          a child process at SCHED_IDLE gzips
  inline  what format v1's writer did on the loop: write(2) per row, fsync on the loop every
          interval, and on rotation fsync + gzip on the loop
Prints per way: tick lateness p50 / p99 / p99.9 / max, the caller's time per write() (p50, p99), and
when yesterday's .gz was complete.

    python3 benchmarks/fieldlog.py [--seconds 20] [--rows 200] [--mb 32] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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
        self.day, self.size = "", 0
        self.last_sync = time.monotonic()
        self.header = header_bytes("devices", DEVICE_FIELDS, "bench")

    def write(self, row: Dict[str, Any], *, now_unix_ns: int) -> None:
        line = csv_line([fmt_value(row.get(f)) for f in DEVICE_FIELDS])
        day = day_of(now_unix_ns)
        if self.fd is None or day != self.day:
            self._rotate(day)
        assert self.fd is not None
        os.write(self.fd, line)
        self.size += len(line)
        if time.monotonic() - self.last_sync >= self.fsync_interval_s:
            os.fsync(self.fd)
            self.last_sync = time.monotonic()

    def _rotate(self, day: str) -> None:
        old = self.path
        self.close()
        self.day = day
        self.path = self.dir / file_name("devices", day, 0)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self.fd, self.header)
        self.size = len(self.header)
        if old is not None:
            compress(old)

    def flush(self, fsync: bool = True) -> bool:
        if self.fd is not None:
            os.fsync(self.fd)
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


DAY_NS = 86_400 * 10**9


def _row(i: int, t_ns: int) -> Dict[str, Any]:
    return {"time_utc": t_ns, "raw_ns": time.monotonic_ns(), "device": "0xd0000001", "state": "synchronised",
            "bound_ns": 18_000 + i % 977, "residual_ns": i % 50_000 - 25_000,
            "line_delay_ns": 40_000 + i % 9973, "poll_s": 0.25}


def prefill(log: Any, mb: float) -> None:
    """Yesterday's file, `mb` MB of rows (not timed)."""
    yesterday = time.time_ns() - DAY_NS
    for i in range(int(mb * 1e6 / 110)):
        row = _row(i, yesterday)
        if isinstance(log, InlineLog):
            row["time_utc"] = utc_iso(yesterday)
        log.write(row, now_unix_ns=yesterday)
        if i % 2000 == 1999:
            log.flush(fsync=False)  # keep within the queue's bound
    log.flush()


async def run(way: str, directory: str, seconds: float, rows_per_s: int, mb: float) -> Dict[str, Any]:
    log: Any = None
    if way == "queued":
        log = FieldLog(directory, "devices", fsync_interval_s=1.0, max_bytes=1 << 30, host_id="bench")
    elif way == "inline":
        log = InlineLog(directory, 1.0, 1 << 30)
    if log is not None:
        prefill(log, mb)
    late: List[float] = []
    write_s: List[float] = []
    gz_done: List[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + seconds

    async def ticker() -> None:
        while loop.time() < end:
            t = time.monotonic()
            await asyncio.sleep(0.001)
            late.append(time.monotonic() - t - 0.001)
            if not gz_done and any(p.name.endswith(".csv.gz") for p in Path(directory).iterdir()):
                gz_done.append(loop.time() - start)

    async def producer() -> None:
        burst = max(1, rows_per_s // 100)  # every 10 ms
        i = 0
        while loop.time() < end:
            if log is not None:
                for _ in range(burst):
                    now = time.time_ns()
                    row = _row(i, now)
                    if isinstance(log, InlineLog):
                        row["time_utc"] = utc_iso(now)
                    t = time.perf_counter()
                    log.write(row, now_unix_ns=now)
                    write_s.append(time.perf_counter() - t)
                    i += 1
            await asyncio.sleep(0.01)

    await asyncio.gather(ticker(), producer())
    if log is not None:
        log.close()
    late.sort()
    write_s.sort()

    def pick(xs: List[float], q: float, unit: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] * unit if xs else 0.0

    return {"way": way, "ticks": len(late), "p50": pick(late, 0.5, 1e3), "p99": pick(late, 0.99, 1e3),
            "p999": pick(late, 0.999, 1e3), "max": late[-1] * 1e3,
            "write_p50_us": pick(write_s, 0.5, 1e6), "write_p99_us": pick(write_s, 0.99, 1e6),
            "rows": len(write_s), "gz_s": gz_done[0] if gz_done else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rows", type=int, default=200, help="rows per second")
    ap.add_argument("--mb", type=float, default=32.0, help="size of yesterday's file, gzipped at the start")
    ap.add_argument("--dir", help="where to write (default: a temporary directory)")
    ap.add_argument("--ways", default="none,queued,inline")
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="tsq-fieldlog-bench-")
    print(f"{args.rows} rows/s for {args.seconds:g} s per way into {base}, fsync every 1 s, starting with "
          f"the rotation and gzip of a {args.mb:g} MB file; python {sys.version.split()[0]}")
    print(f"{'way':<8} {'ticks':>7} {'late p50':>9} {'p99':>8} {'p99.9':>8} {'max':>9} "
          f"{'write() p50':>11} {'p99':>9} {'rows':>6} {'.gz done':>9}")
    try:
        for way in args.ways.split(","):
            d = os.path.join(base, way)
            os.makedirs(d, exist_ok=True)
            r = asyncio.run(run(way, d, args.seconds, args.rows, args.mb))
            gz = "-" if r["gz_s"] is None else f"{r['gz_s']:.2f} s"
            print(f"{r['way']:<8} {r['ticks']:>7} {r['p50']:>7.3f}ms {r['p99']:>6.2f}ms {r['p999']:>6.2f}ms "
                  f"{r['max']:>7.1f}ms {r['write_p50_us']:>9.1f}µs {r['write_p99_us']:>7.0f}µs "
                  f"{r['rows']:>6} {gz:>9}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
