"""Time to first sync from a cold start: connect + handshake + burst -> first accepted sample.

    python3 benchmarks/first_sync.py [--trials 30] [--mode auto]

A `tsq server` runs in another process on loopback; each trial is a fresh `TsqClient` (new
connection, no session resumption) timed from construction to the first sample `sample()` returns
(handshake, the discarded warm-up exchange, and, with interleaving, the exchange whose successor
carries its precise T3). Also timed: the first basic sample (`exchange()`), and the whole daemon
(`tsq sync`'s SyncRunner: connect, start burst, engine update) from start to its model's first
"synchronised" state, which is what the target is about. Target: <= 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from typing import List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from accuracy import start_server

from tsq.quic.client import TsqClient


async def trial(port: int, pin: str, mode: str, interleaved: bool) -> float:
    t0 = time.perf_counter()
    client = TsqClient(f"127.0.0.1:{port}", pin=pin, interleaved=interleaved)
    try:
        if interleaved:
            await client.sample(mode)
        else:
            await client.exchange(mode)
        return time.perf_counter() - t0
    finally:
        await client.close()


async def daemon_trial(port: int, pin: str) -> float:
    """A fresh SyncRunner from construction to a synchronised model (checked every 0.5 ms)."""
    from tsq import clock
    from tsq.gateway.runner import SyncRunner
    from tsq.gateway.settings import SyncConfig

    t0 = time.perf_counter()
    runner = SyncRunner(SyncConfig(servers=[f"127.0.0.1:{port}"], pin=pin, quiet=True))
    task = asyncio.create_task(runner.run())
    try:
        while runner.model.state(clock.raw_ns()) != "synchronised":
            if task.done():
                task.result()
                raise RuntimeError("the daemon ended before synchronising")
            if time.perf_counter() - t0 > 10:
                raise RuntimeError("not synchronised after 10 s")
            await asyncio.sleep(0.0005)
        return time.perf_counter() - t0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def summary(name: str, times: List[float]) -> str:
    ms = sorted(t * 1e3 for t in times)
    return (f"{name:<40} n={len(ms)}  p50 {statistics.median(ms):6.1f} ms  "
            f"p90 {ms[int(0.9 * (len(ms) - 1))]:6.1f} ms  max {ms[-1]:6.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--mode", default="auto")
    args = ap.parse_args()
    proc, port, pin = start_server()
    try:
        for interleaved in (True, False):
            times = [asyncio.run(trial(port, pin, args.mode, interleaved)) for _ in range(args.trials)]
            label = ("first interleaved sample (sample())" if interleaved
                     else "first basic sample (exchange())")
            print(summary(label, times), flush=True)
        times = [asyncio.run(daemon_trial(port, pin)) for _ in range(args.trials)]
        print(summary("daemon: start to synchronised model", times), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
