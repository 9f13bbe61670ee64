"""The sync engine's output error against truth, on loopback and through the impairment relay, side
by side with chrony under the same conditions, over several independent rounds.

Truth: the TSQ server (a `tsq server` process) serves this machine's system clock, so the model's
UTC at a raw instant must equal CLOCK_REALTIME at that instant; the error is `utc_ns(raw) - realtime`
read at one instant (narrowest of 3 brackets). For chrony, a chronyd NTP server (-x, `local stratum
1`) serves the same clock and a chronyd client (-x: estimates, never adjusts) polls it through its
own relay with the same impairment; its error is the "System time" offset of `chronyc tracking`
(truth is 0 there too). Both poll every second (TSQ minpoll=maxpoll=0, chrony minpoll=maxpoll=0,
iburst, xleave) and are read 4 times a second.

In each round TSQ and chrony start together, each from nothing, and run side by side (the same
machine load for both; `--one-at-a-time` runs TSQ, then chrony, instead); each relay is a separate
process with the round's seed (so its timing never waits on this process). One run of a regression
is one slowly wandering error curve, so a single round's p99 is close to its maximum and varies 2x
from round to round: the summary pools the rounds and also gives the median of the per-round
figures, and the ratio TSQ / chrony.

Windows: "first minute" is 20-80 s after start, "steady" from 80 s to the end of the round.

    python3 benchmarks/engine.py                                  # both scenarios, 3 rounds of 200 s
    python3 benchmarks/engine.py --scenario jitter+loss --rounds 5 --seconds 300
    python3 benchmarks/engine.py --scenario loopback --no-chrony --rounds 1 --seconds 100

Nothing here touches the system clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tsq import clock
from tsq.testing.certs import make_pki
from tsq.testing.daemon import ChronyProcess, RelayProcess, ServerProcess, free_udp_port
from tsq.testing.relay import Impairment

SCENARIOS: Dict[str, Optional[Impairment]] = {
    "loopback": None,
    # symmetric: 1 ms each way ± 0.3 ms, 20 % loss each way
    "jitter+loss": Impairment(delay_s=0.001, jitter_s=0.0003, loss=0.2),
}
WINDOWS: Dict[str, Tuple[float, float]] = {"first minute": (20.0, 80.0), "steady": (80.0, float("inf"))}
READ_EVERY_S = 0.25

Series = List[Tuple[float, int]]          # (seconds since this system started, error ns)


def _instant() -> Tuple[int, int]:
    """(raw ns, realtime ns) read as close together as possible."""
    c = clock.correlate(clock.CLOCK_MONOTONIC_RAW, clock.CLOCK_REALTIME, tries=3)
    return c.ref_ns, c.sys_ns


def _window(series: Series, name: str) -> List[int]:
    lo, hi = WINDOWS[name]
    return sorted(abs(e) for t, e in series if lo <= t < hi)


def _pct(mags: List[int], q: float) -> float:
    """Nearest-rank percentile in µs of an ascending list."""
    return mags[min(len(mags) - 1, int(q * len(mags)))] / 1e3


def _figures(mags: List[int]) -> str:
    if not mags:
        return "no data"
    return f"p50 {_pct(mags, 0.5):8.3f}  p99 {_pct(mags, 0.99):8.3f}  max {mags[-1] / 1e3:8.3f} µs"


# ------------------------------------------------------------------------------------------ TSQ
async def _tsq_series(server: str, ca: str, workdir: str, seconds: float) -> Tuple[Series, int, int]:
    """The model's error against CLOCK_REALTIME over `seconds`; also (readings, synchronised)."""
    from tsq.gateway.runner import SyncRunner
    from tsq.gateway.settings import SyncConfig

    runner = SyncRunner(SyncConfig(servers=[server], ca=ca, minpoll=0, maxpoll=0, quiet=True,
                                   control_path=os.path.join(workdir, "control.sock")))
    task = asyncio.create_task(runner.run())
    series: Series = []
    readings = synced = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while loop.time() - start < seconds:
            await asyncio.sleep(READ_EVERY_S)
            if task.done():
                task.result()
            raw, real = _instant()
            t = loop.time() - start
            utc = runner.model.utc_ns(raw)
            if t >= WINDOWS["first minute"][0]:
                readings += 1
                synced += runner.model.state(raw) == "synchronised"
            if utc is not None:
                series.append((t, utc - real))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return series, readings, synced


def run_tsq(imp: Optional[Impairment], seconds: float, seed: int) -> Tuple[Series, int, int]:
    with tempfile.TemporaryDirectory(prefix="tsq-bench-") as tmp:
        pki = make_pki(tmp)
        with ServerProcess(pki) as srv, contextlib.ExitStack() as stack:
            address = srv.address
            if imp is not None:
                address = stack.enter_context(RelayProcess(srv.port, imp, imp, seed=seed)).address
            return asyncio.run(_tsq_series(address, pki.ca_cert, tmp, seconds))


# ------------------------------------------------------------------------------------------ chrony
def run_chrony(imp: Optional[Impairment], seconds: float, seed: int) -> Series:
    series: Series = []
    port = free_udp_port()
    with ChronyProcess([f"port {port}", "bindaddress 127.0.0.1", "local stratum 1", "allow 127.0.0.1"]), \
            contextlib.ExitStack() as stack:
        target = port
        if imp is not None:
            target = stack.enter_context(RelayProcess(port, imp, imp, seed=seed)).port
        with ChronyProcess([f"server 127.0.0.1 port {target} iburst minpoll 0 maxpoll 0 xleave"]) as cli:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                time.sleep(READ_EVERY_S)
                rows = cli.chronyc("tracking")
                t = time.monotonic() - start
                # "System time": chrony's estimate of the system clock's offset (truth: 0)
                if rows and len(rows[0]) > 4 and rows[0][0] not in ("00000000", "7F7F0101"):
                    series.append((t, round(float(rows[0][4]) * 1e9)))
    return series


def run_round(imp: Optional[Impairment], seconds: float, seed: int, with_chrony: bool,
              one_at_a_time: bool = False) -> Tuple[Tuple[Series, int, int], Optional[Series]]:
    """TSQ in this thread and chrony in another, started together (or one after the other)."""
    if one_at_a_time:
        tsq = run_tsq(imp, seconds, seed)
        return tsq, run_chrony(imp, seconds, seed) if with_chrony else None
    chrony: List[Series] = []
    errors: List[BaseException] = []

    def chrony_job() -> None:
        try:
            chrony.append(run_chrony(imp, seconds, seed))
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    thread = threading.Thread(target=chrony_job, daemon=True) if with_chrony else None
    if thread is not None:
        thread.start()
    tsq = run_tsq(imp, seconds, seed)
    if thread is not None:
        thread.join(seconds + 60)
        if errors:
            raise errors[0]
    return tsq, chrony[0] if chrony else None


def _summary(name: str, per_round: Dict[str, List[List[int]]]) -> None:
    """Pooled percentiles, medians of the per-round ones, and the TSQ / chrony ratios."""
    print(f"  {name}:")
    pooled_p: Dict[str, Tuple[float, float]] = {}
    for system, rounds in per_round.items():
        rounds = [r for r in rounds if r]
        if not rounds:
            print(f"    {system:6} no data")
            continue
        pooled = sorted(m for r in rounds for m in r)
        p50s = [_pct(r, 0.5) for r in rounds]
        p99s = [_pct(r, 0.99) for r in rounds]
        pooled_p[system] = (_pct(pooled, 0.5), _pct(pooled, 0.99))
        print(f"    {system:6} pooled {_figures(pooled)}  |  median of rounds p50 "
              f"{statistics.median(p50s):8.3f}  p99 {statistics.median(p99s):8.3f} µs  (n={len(pooled)})")
    if "tsq" in pooled_p and "chrony" in pooled_p:
        (t50, t99), (c50, c99) = pooled_p["tsq"], pooled_p["chrony"]
        print(f"    ratio TSQ / chrony (pooled): p50 {t50 / c50:.2f}  p99 {t99 / c99:.2f}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="independent rounds per scenario (default 3)")
    ap.add_argument("--seconds", type=float, default=200.0,
                    help="length of a round, from start (default 200; the steady window starts at 80)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    ap.add_argument("--no-chrony", action="store_true", help="skip chrony even when installed")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="run TSQ, then chrony, in each round (default: side by side)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= WINDOWS["first minute"][1]:
        ap.error(f"need --rounds >= 1 and --seconds > {WINDOWS['first minute'][1]:g}")
    with_chrony = not args.no_chrony and shutil.which("chronyd") is not None \
        and shutil.which("chronyc") is not None
    if with_chrony and os.geteuid() != 0:
        print("chrony comparison needs root here (chronyd -u root, private sockets); skipped")
        with_chrony = False
    if not args.no_chrony and not with_chrony:
        print("chrony not available: TSQ figures only")
    print(f"engine output error vs truth: {args.rounds} round(s) of {args.seconds:g} s, poll 1 s, "
          f"read every {READ_EVERY_S:g} s; windows " +
          ", ".join(f"{n} {lo:g}-{hi:g} s" for n, (lo, hi) in WINDOWS.items()).replace("-inf", "-end"))
    for name in args.scenario or list(SCENARIOS):
        imp = SCENARIOS[name]
        print(f"[{name}] {imp if imp else 'direct loopback'}", flush=True)
        per_window: Dict[str, Dict[str, List[List[int]]]] = {w: {"tsq": [], "chrony": []} for w in WINDOWS}
        for k in range(1, args.rounds + 1):
            (tsq, readings, synced), chrony = run_round(imp, args.seconds, seed=k, with_chrony=with_chrony,
                                                   one_at_a_time=args.one_at_a_time)
            line = [f"  round {k}: TSQ synchronised {synced}/{readings}"]
            for w in WINDOWS:
                per_window[w]["tsq"].append(_window(tsq, w))
                if chrony is not None:
                    per_window[w]["chrony"].append(_window(chrony, w))
                t = per_window[w]["tsq"][-1]
                c = per_window[w]["chrony"][-1] if chrony is not None else []
                line.append(f"{w} p99 TSQ {_pct(t, 0.99) if t else float('nan'):.1f}"
                            + (f" / chrony {_pct(c, 0.99):.1f}" if c else "") + " µs")
            print("; ".join(line), flush=True)
        for w in WINDOWS:
            _summary(w, {s: r for s, r in per_window[w].items() if r})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
