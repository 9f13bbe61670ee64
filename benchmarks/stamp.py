"""ns per call of stamp_ntp64 (Cython and pure Python) with time.time_ns() for reference.

Run: python3 benchmarks/stamp.py [--runs 9] [--calls 200000]
Each figure is the median over runs of (elapsed / calls) for a tight loop of calls on a local name.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Optional

import tsq._pyclock as pyclock

try:
    import tsq._fastclock as fastclock
except ImportError:  # not built
    fastclock = None  # type: ignore[assignment]


def per_call_ns(make_loop: Callable[[int], None], runs: int, calls: int) -> float:
    samples: List[float] = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        make_loop(calls)
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def stamp_loop(stamp: Callable[[bytearray, int], int]) -> Callable[[int], None]:
    buf = bytearray(48)

    def loop(calls: int) -> None:
        for _ in range(calls // 10):  # unrolled by 10 so the loop's own cost stays small
            stamp(buf, 40); stamp(buf, 40); stamp(buf, 40); stamp(buf, 40); stamp(buf, 40)  # noqa: E702
            stamp(buf, 40); stamp(buf, 40); stamp(buf, 40); stamp(buf, 40); stamp(buf, 40)  # noqa: E702

    return loop


def time_ns_loop(calls: int) -> None:
    now = time.time_ns
    for _ in range(calls // 10):
        now(); now(); now(); now(); now(); now(); now(); now(); now(); now()  # noqa: E702


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args(argv)
    ref = per_call_ns(time_ns_loop, args.runs, args.calls)
    pure = per_call_ns(stamp_loop(pyclock.stamp_ntp64), args.runs, args.calls // 4)
    print(f"time.time_ns()               {ref:8.1f} ns/call (reference)")
    print(f"stamp_ntp64 pure Python      {pure:8.1f} ns/call")
    if fastclock is None:
        print("stamp_ntp64 Cython           not built (python3 setup.py build_ext --inplace)")
        return 0
    fast = per_call_ns(stamp_loop(fastclock.stamp_ntp64), args.runs, args.calls)
    print(f"stamp_ntp64 Cython           {fast:8.1f} ns/call")
    print(f"speed-up Cython / pure       {pure / fast:8.1f} x")
    print(f"Cython / time.time_ns()      {fast / ref:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
