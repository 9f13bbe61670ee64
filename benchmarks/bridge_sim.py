"""The bridge's estimator through the line models in simulated time (tsq.testing.linesim): what it
can reach on each link when the host and the device add only what the platform preset says.

`benchmarks/bridge.py --link NAME` measures the real chain in real time: the firmware host build,
the line model in its own process, the bridge, all through pseudo-terminals, and on this VM every
pty hop costs tens of µs. This runs the same bridge session and line model without I/O (see
tsq/testing/linesim.py for what is simulated and the presets ideal, pi and vm-pty); the truth is
exact, so the figures are the estimator's and the line's alone.

    python3 benchmarks/bridge_sim.py [--link all|NAME,...] [--platform ideal,pi,vm-pty]
                                     [--seconds 180] [--warmup 60] [--seeds 5]

Prints one row per link and platform: |error| p50/p99 over the measured seconds (median over seeds),
the worst seed's p99 and max, the least share inside the device's own bound over the seeds, the
bound's p50, and the latest first synchronised second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tsq.bridge.links import PROFILES
from tsq.testing.linesim import PLATFORMS, simulate


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--link", default="all", help="all, or comma-separated: " + ",".join(PROFILES))
    ap.add_argument("--platform", default="ideal,pi,vm-pty", help="comma-separated: " + ",".join(PLATFORMS))
    ap.add_argument("--seconds", type=int, default=180, help="measured seconds per run (default 180)")
    ap.add_argument("--warmup", type=int, default=60, help="seconds before measuring (default 60)")
    ap.add_argument("--seeds", type=int, default=5, help="runs per cell, each its own seed (default 5)")
    ap.add_argument("--drift-ppm", type=float, default=50.0)
    ap.add_argument("--ping-interval", type=float, default=1.0)
    args = ap.parse_args(argv)
    links = list(PROFILES) if args.link == "all" else args.link.split(",")
    plats = args.platform.split(",")
    for name in links + plats:
        if name not in PROFILES and name not in PLATFORMS:
            ap.error(f"unknown link or platform {name!r}")
    print(f"simulated {args.seconds} s after {args.warmup} s, {args.seeds} seeds, device "
          f"{args.drift_ppm:+g} ppm, pings every {args.ping_interval:g} s, 115200 baud")
    print("| link | platform | synced s | \\|error\\| p50 µs | p99 µs | worst seed p99 µs | max µs "
          "| inside own bound | own bound p50 µs | first synchronised s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for link in links:
        for plat in plats:
            runs = [simulate(link, PLATFORMS[plat], args.seconds, args.warmup, seed, args.drift_ppm,
                             ping_interval_s=args.ping_interval) for seed in range(args.seeds)]

            def med(key: str, runs: List[Dict[str, Any]] = runs) -> float:
                return float(statistics.median(r[key] for r in runs))
            worst_p99, worst_max = max(r["p99"] for r in runs), max(r["max"] for r in runs)
            inside = 100 * min(r["inside"] for r in runs)
            first = max(r["first_synced"] for r in runs)
            print(f"| {link} | {plat} | {med('rows'):.0f}/{args.seconds} | {med('p50') / 1e3:.1f} "
                  f"| {med('p99') / 1e3:.1f} | {worst_p99 / 1e3:.1f} | {worst_max / 1e3:.1f} "
                  f"| {inside:.1f} % | {med('bound_p50') / 1e3:.0f} | {first:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
