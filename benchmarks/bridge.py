"""End-to-end error of a device behind the serial bridge, and the bridge's own cost.

A firmware host build (firmware-bridge/ports/posix, the real core) with a 50 ppm crystal on a pty
at 115200 baud; the bridge (`python -m tsq.bridge PATH --source system`) in its own process, pinging
once a second. The system clock is both the bridge's time source and the truth the firmware's truth
log compares against, so the figures are the device's real error, bridge and line included.
After `--warmup` seconds, prints |error| p50/p99/max over `--duration` seconds of truth rows (one a
second), how often the truth was inside the device's own bound, the bridge's view of the line (ping
delay and residual about its fit, from its device log) and the bridge process's CPU (% of one core)
and RSS.

`--link NAME` puts a line model (tsq.testing.seriallink, profiles of tsq.bridge.links) between the
firmware's pty and the bridge; `pty` (the default) is the firmware's own pty with no model; `all`
runs every link in turn and prints one table row each, with the line model's own release error
(written minus due). The bridge is passed `--link NAME` only when its --help offers the option.

    python3 benchmarks/bridge.py [--link pty|ftdi|ftdi-low|ch340|cp210x|cdc-acm|pl011|16550|all]
                                 [--duration 60] [--warmup 90] [--ping-interval 1]
                                 [--device-rx-spin-ms 2000] [--single-ping]

The device stand-in stamps like an MCU (`--rx-spin-ms`, see firmware-bridge/ports/posix/main.c):
it never sleeps, so a frame's T2 is its arrival, as in an RX interrupt. Asleep in poll() on an idle
VM it stamps tens of microseconds late, a delay of the simulation that no real device has, and one
core is left to the bridge either way; `--device-rx-spin-ms 0` shows that case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tsq.bridge.links import PROFILES
from tsq.fieldlog import read_rows
from tsq.testing.firmware import SimulatedDevice, build_host_firmware
from tsq.testing.seriallink import LineProcess


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _bridge_has_link_option(env: dict) -> bool:
    out = subprocess.run([sys.executable, "-m", "tsq.bridge", "--help"], capture_output=True, text=True,
                         env=env).stdout
    return "--link" in out


def run_link(link: str, args: argparse.Namespace, binary: object, pass_link: bool) -> Optional[dict]:
    """One run through `link`; the figures of one table row (None when it never synchronised)."""
    with tempfile.TemporaryDirectory() as d, SimulatedDevice(d, device_id=0xBE4C, drift_ppm=args.drift_ppm,
                                                             offset_ms=5, binary=binary,
                                                             extra=("--rx-spin-ms",
                                                                    repr(args.device_rx_spin_ms))) as dev:
        path = [os.getcwd(), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        # pty: the firmware's own pty, as before; any other link: the line model between the two
        line = None if link == "pty" else LineProcess(link, 115200, device=dev.path, seed=args.seed,
                                                      extra=args.line_extra).start()
        port = dev.path if line is None else line.host_path
        t_start = time.time_ns()
        bridge = subprocess.Popen([sys.executable, "-m", "tsq.bridge", port, "--source", "system",
                                   "--assume-bound", "1000", "--baud", "115200", "--ping-interval",
                                   str(args.ping_interval), "--control", os.path.join(d, "control.sock"),
                                   "--log", os.path.join(d, "log"),
                                   "--fsync-interval", "1", *(["--single-ping"] if args.single_ping else []),
                                   *(["--link", link] if pass_link else []),
                                   *(["--reply-spin-ms", repr(args.reply_spin_ms)]
                                     if args.reply_spin_ms is not None else []),
                                   *(["--read-probe"] if args.read_probe else [])],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            time.sleep(args.warmup)
            start_ns, cpu0, t0 = time.time_ns(), _cpu_s(bridge.pid), time.monotonic()
            time.sleep(args.duration)
            cpu1, t1 = _cpu_s(bridge.pid), time.monotonic()
            rss = _rss_mb(bridge.pid)
            truth = dev.truth()
        finally:
            bridge.terminate()
            bridge.wait(10)
            line_stats = line.stop() if line is not None else {}
        if args.keep:   # the bridge's logs and the device's truth log, for a look afterwards
            shutil.copytree(d, os.path.join(args.keep, link), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock", "tty*"))
        pings = [r for r in read_rows([os.path.join(d, "log")], "devices")
                 if r["residual_ns"] and r["line_delay_ns"]][-int(args.duration / args.ping_interval):]
    rows = [(e, b) for rt, e, b, s in truth if rt >= start_ns and s == 1 and e is not None and b is not None]
    first = [rt for rt, _e, _b, s in truth if s == 1]
    measured = [rt for rt, _e, _b, _s in truth if rt >= start_ns]
    if not rows:
        print(f"{link}: no synchronised truth rows in the measured window", file=sys.stderr)
    errs = [abs(e) / 1000 for e, _ in rows]
    delays = [int(r["line_delay_ns"]) / 1000 for r in pings]
    resids = [abs(int(r["residual_ns"])) / 1000 for r in pings]
    return {
        "link": link, "rows": len(rows), "measured": len(measured),
        "p50": _pct(errs, 0.5) if errs else float("nan"), "p99": _pct(errs, 0.99) if errs else float("nan"),
        "max": max(errs) if errs else float("nan"),
        "mean": sum(e for e, _ in rows) / len(rows) / 1000 if rows else float("nan"),
        "inside": 100 * sum(1 for e, b in rows if abs(e) <= b) / len(rows) if rows else float("nan"),
        "bound_p50": _pct([b / 1000 for _, b in rows], 0.5) if rows else float("nan"),
        "first_sync_s": (first[0] - t_start) / 1e9 if first else float("nan"),
        "delay_p50": _pct(delays, 0.5) if delays else float("nan"),
        "resid_p99": _pct(resids, 0.99) if resids else float("nan"), "pings": len(delays),
        "cpu": 100 * (cpu1 - cpu0) / (t1 - t0), "rss": rss,
        "line_p50": line_stats.get("p50_us", float("nan")),
        "line_p99": line_stats.get("p99_us", float("nan")),
        "line_max": line_stats.get("max_us", float("nan")),
    }


HEADER = ("| link | synced rows | \\|error\\| p50 µs | p99 µs | max µs | mean µs | inside own bound | "
          "own bound p50 µs | "
          "first synchronised s | ping delay p50 µs | \\|residual\\| p99 µs | "
          "link release error p50/p99/max µs |")


def _row(r: dict) -> str:
    return (f"| {r['link']} | {r['rows']}/{r['measured']} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['max']:.1f} | {r['mean']:+.1f} | {r['inside']:.1f} % | {r['bound_p50']:.0f} | "
            f"{r['first_sync_s']:.1f} | "
            f"{r['delay_p50']:.0f} | "
            f"{r['resid_p99']:.1f} | {_line_err(r)} |")


def _line_err(r: dict) -> str:
    if r["line_p50"] != r["line_p50"]:   # NaN: no model on this link
        return "— (no model)"
    return f"{r['line_p50']:.1f}/{r['line_p99']:.1f}/{r['line_max']:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--link", default="pty", choices=[*PROFILES, "all"],
                    help="the line between device and bridge (tsq.testing.seriallink; default pty: the "
                         "firmware's own pty, no model); all: each in turn, one table row each")
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per link (default 60)")
    ap.add_argument("--warmup", type=float, default=90.0,
                    help="seconds before measuring (default 90)")
    ap.add_argument("--ping-interval", type=float, default=1.0)
    ap.add_argument("--drift-ppm", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=1, help="the line model's frame and timer phases")
    ap.add_argument("--keep", metavar="DIR", help="copy each link's logs (bridge, truth) to DIR/LINK")
    ap.add_argument("--device-rx-spin-ms", type=float, default=2000.0,
                    help="the simulated device polls its tty without sleeping for this long after each "
                         "read (default 2000, longer than a ping interval: always awake, as an MCU's RX "
                         "interrupt is; 0: it sleeps in poll() and its T2 waits for the scheduler)")
    ap.add_argument("--single-ping", action="store_true",
                    help="pass --single-ping to the bridge (no warm-up ping: one exchange per interval)")
    ap.add_argument("--reply-spin-ms", type=float,
                    help="pass --reply-spin-ms to the bridge (its PONG window; 0: off)")
    ap.add_argument("--read-probe", action="store_true",
                    help="pass --read-probe to the bridge (its read latency taken off the USB grid)")
    ap.add_argument("--line-realtime", action="store_true",
                    help="run the line model under SCHED_FIFO (where allowed)")
    args = ap.parse_args()
    # under SCHED_FIFO the model wakes at once: no need to stay awake after traffic (which, spinning
    # at real-time priority, would starve the bridge)
    args.line_extra = ("--realtime", "--awake-ms", "0") if args.line_realtime else ()
    binary = build_host_firmware()
    paths = (os.getcwd(), os.environ.get("PYTHONPATH", ""))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    pass_link = _bridge_has_link_option(env)
    links = list(PROFILES) if args.link == "all" else [args.link]
    print(f"device: {args.drift_ppm:+g} ppm crystal, firmware host build, 115200 baud, ping every "
          f"{args.ping_interval:g} s {'(single)' if args.single_ping else '(after a warm-up)'}; "
          f"device RX spin {args.device_rx_spin_ms:g} ms; {args.warmup:g} s warm-up, "
          f"{args.duration:g} s measured per link; "
          f"bridge {'is' if pass_link else 'is not'} told the link")
    print(HEADER)
    print("|" + "---|" * 11)
    ok = True
    for link in links:
        r = run_link(link, args, binary, pass_link)
        ok = ok and r is not None and r["rows"] > 0
        if r is not None:
            print(_row(r), flush=True)
            print(f"  {link}: bridge CPU {r['cpu']:.2f} % of one core, RSS {r['rss']:.1f} MB, "
                  f"{r['pings']} pings", file=sys.stderr, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
