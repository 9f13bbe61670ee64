"""The sync engine's output error against truth, on loopback and through the impairment relay, side
by side with chrony under the same conditions.

Truth: the TSQ server (a `tsq server` process) serves this machine's system clock, so the model's
UTC at a raw instant must equal CLOCK_REALTIME at that instant; the error is `utc_ns(raw) - realtime`
read at one instant (narrowest of 3 brackets). For chrony, a chronyd NTP server (-x, `local stratum
1`) serves the same clock and a chronyd client (-x: estimates, never adjusts) polls it through the
same relay; its error is the "System time" offset of `chronyc tracking` (truth is 0 there too).
Both poll every second (TSQ minpoll=maxpoll=0, chrony minpoll=maxpoll=0).

    python3 benchmarks/engine.py                       # both scenarios, 60 s each after a 20 s warm-up
    python3 benchmarks/engine.py --duration 30 --scenario loopback --no-chrony

Prints p50/p99/max of |error| per scenario and system. Nothing here touches the system clock.
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
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tsq import clock
from tsq.testing.certs import make_pki
from tsq.testing.daemon import ChronyProcess, ServerProcess, free_udp_port
from tsq.testing.relay import Impairment, UdpRelay

SCENARIOS: Dict[str, Optional[Impairment]] = {
    "loopback": None,
    # symmetric: 1 ms each way ± 0.3 ms, 20 % loss each way
    "jitter+loss": Impairment(delay_s=0.001, jitter_s=0.0003, loss=0.2),
}


def _instant() -> Tuple[int, int]:
    """(raw ns, realtime ns) read as close together as possible."""
    c = clock.correlate(clock.CLOCK_MONOTONIC_RAW, clock.CLOCK_REALTIME, tries=3)
    return c.ref_ns, c.sys_ns


def summary(errors_ns: List[int]) -> str:
    if not errors_ns:
        return "no data"
    mags = sorted(abs(e) for e in errors_ns)
    p = lambda q: mags[min(len(mags) - 1, int(q * len(mags)))]  # noqa: E731
    return (f"n={len(mags):4d}  |err| p50 {p(0.5) / 1e3:9.3f} us  p99 {p(0.99) / 1e3:9.3f} us  "
            f"max {mags[-1] / 1e3:9.3f} us  mean err {statistics.fmean(errors_ns) / 1e3:+9.3f} us")


# ------------------------------------------------------------------------------------------ TSQ
async def _tsq_errors(server: str, ca: str, workdir: str, warmup_s: float, duration_s: float,
                      interval_s: float) -> Tuple[List[int], List[str]]:
    from tsq.sync.daemon import SyncConfig, SyncRunner

    runner = SyncRunner(SyncConfig(servers=[server], ca=ca, minpoll=0, maxpoll=0, quiet=True,
                                   control_path=os.path.join(workdir, "control.sock")))
    task = asyncio.create_task(runner.run())
    errors: List[int] = []
    states: List[str] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while loop.time() - start < warmup_s + duration_s:
            await asyncio.sleep(interval_s)
            if task.done():
                task.result()
            raw, real = _instant()
            utc = runner.model.utc_ns(raw)
            if loop.time() - start >= warmup_s:
                states.append(runner.model.state(raw))
                if utc is not None:
                    errors.append(utc - real)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return errors, states


def run_tsq(scenario: str, imp: Optional[Impairment], warmup_s: float, duration_s: float) -> str:
    with tempfile.TemporaryDirectory(prefix="tsq-bench-") as tmp:
        pki = make_pki(tmp)
        with ServerProcess(pki) as srv:
            relay = None
            address = srv.address
            if imp is not None:
                relay = UdpRelay(("127.0.0.1", srv.port), forward=imp, backward=imp, seed=7).start()
                address = f"127.0.0.1:{relay.address[1]}"
            try:
                errors, states = asyncio.run(
                    _tsq_errors(address, pki.ca_cert, tmp, warmup_s, duration_s, 0.25))
            finally:
                if relay is not None:
                    relay.stop()
    synced = sum(s == "synchronised" for s in states)
    return f"{summary(errors)}  synchronised {synced}/{len(states)}"


# ------------------------------------------------------------------------------------------ chrony
def run_chrony(scenario: str, imp: Optional[Impairment], warmup_s: float, duration_s: float) -> str:
    errors: List[int] = []
    port = free_udp_port()
    with ChronyProcess([f"port {port}", "bindaddress 127.0.0.1", "local stratum 1", "allow 127.0.0.1"]):
        relay = None
        target = port
        if imp is not None:
            relay = UdpRelay(("127.0.0.1", port), forward=imp, backward=imp, seed=7).start()
            target = relay.address[1]
        try:
            with ChronyProcess([f"server 127.0.0.1 port {target} iburst minpoll 0 maxpoll 0 xleave"]) as cli:
                start = time.monotonic()
                while time.monotonic() - start < warmup_s + duration_s:
                    time.sleep(0.25)  # as often as the TSQ model is read: percentiles of equal counts
                    if time.monotonic() - start < warmup_s:
                        continue
                    rows = cli.chronyc("tracking")
                    # "System time": chrony's estimate of the system clock's offset (truth: 0)
                    if rows and len(rows[0]) > 4 and rows[0][0] not in ("00000000", "7F7F0101"):
                        errors.append(round(float(rows[0][4]) * 1e9))
        finally:
            if relay is not None:
                relay.stop()
    return summary(errors)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per run (default 60)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring (default 20)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    ap.add_argument("--no-chrony", action="store_true", help="skip chrony even when installed")
    args = ap.parse_args(argv)
    have_chrony = shutil.which("chronyd") is not None and shutil.which("chronyc") is not None
    if not args.no_chrony and have_chrony and os.geteuid() != 0:
        print("chrony comparison needs root here (chronyd -u root, private sockets); skipped")
        have_chrony = False
    print(f"engine output error vs truth: warm-up {args.warmup:g} s, {args.duration:g} s measured, "
          "poll 1 s")
    for name in args.scenario or list(SCENARIOS):
        imp = SCENARIOS[name]
        print(f"[{name}] {imp if imp else 'direct loopback'}", flush=True)
        print(f"  tsq    {run_tsq(name, imp, args.warmup, args.duration)}", flush=True)
        if have_chrony and not args.no_chrony:
            print(f"  chrony {run_chrony(name, imp, args.warmup, args.duration)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
