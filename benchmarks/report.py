"""Time and peak memory of `tsq report` on a synthetic month of field logs.

One gateway (server samples at 1/s) and 4 devices (1/s each): 30 days x 86,400 s x 5 = ~13 M lines,
plus a model update every 16 s, in daily files gzip-compressed like the writer leaves them (today's
plain), in format v2 (host id in the header; raw_ns, utc_source, poll_s in every row). The logs
are generated first (not timed); then `tsq report DIR --json` runs in a child process, timed, and
its peak RSS is read from getrusage(RUSAGE_CHILDREN).

    python3 benchmarks/report.py [--days 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from tsq.fieldlog import DEVICE_FIELDS, GATEWAY_MODEL_FIELDS, GATEWAY_SAMPLE_FIELDS
from tsq.fieldlog_files import header_bytes

DAY = 86_400
T0 = 1_793_577_600  # 2026-11-02T00:00:00Z
RAW0 = 10**12       # CLOCK_MONOTONIC_RAW at T0


def _times(day: int, step: int) -> list[str]:
    t = (np.arange(T0 + day * DAY, T0 + (day + 1) * DAY, step) * 10**9).astype("datetime64[ns]")
    return [s + "Z" for s in np.datetime_as_string(t, unit="ns")]


def _write(directory: str, stream: str, day: int, fields: tuple[str, ...], lines: list[str],
           last: bool) -> int:
    date = time.strftime("%Y%m%d", time.gmtime(T0 + day * DAY))
    body = header_bytes(stream, fields, "bench-gw", "bench").decode() + "\n".join(lines) + "\n"
    path = os.path.join(directory, f"{stream}-{date}.csv")
    if last:
        with open(path, "w") as f:
            f.write(body)
    else:
        with gzip.open(path + ".gz", "wt", compresslevel=1) as f:
            f.write(body)
    return len(lines)


def generate(directory: str, days: int) -> int:
    rng = np.random.default_rng(7)
    n = 0
    for day in range(days):
        last = day == days - 1
        ts = _times(day, 1)
        raw = range(RAW0 + day * DAY * 10**9, RAW0 + (day + 1) * DAY * 10**9, 10**9)
        off = rng.normal(0, 800, DAY).astype(int)
        dly = rng.integers(2000, 3000, DAY)
        n += _write(directory, "gateway-samples", day, GATEWAY_SAMPLE_FIELDS,
                    [f"{t},127.0.0.1:4433,datagram,{o},{d},5000,1.234,selected,{r},model,1.0"
                     for t, o, d, r in zip(ts, off, dly, raw)],
                    last)
        tm = _times(day, 16)
        n += _write(directory, "gateway-model", day, GATEWAY_MODEL_FIELDS,
                    [f"{t},synchronised,{o},1.234,5000,1/1,0,{r},model,16.0,0.01,"
                     for t, o, r in zip(tm, off[::16], raw[::16])], last)
        lines = []
        for dev in range(4):
            res = rng.normal(0, 5000, DAY).astype(int)
            lines += [f"{t},0x{dev:08x},{e},90000,20000,synchronised,{r},model,1.0"
                      for t, e, r in zip(ts, res, raw)]
        n += _write(directory, "devices", day, DEVICE_FIELDS, lines, last)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (reused if it exists)")
    args = ap.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="tsq-report-bench-")
    os.makedirs(directory, exist_ok=True)
    try:
        if not os.listdir(directory):
            t = time.monotonic()
            n = generate(directory, args.days)
            print(f"generated {n:,} lines in {time.monotonic() - t:.0f} s ({args.days} days)", flush=True)
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "tsq", "report", directory, "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.monotonic() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        print(f"tsq report: {elapsed:.1f} s wall, peak RSS {peak_mb:.0f} MB (targets: < 60 s, < 500 MB)")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
