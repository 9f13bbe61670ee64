"""End-to-end error of a device behind the serial bridge, and the bridge's own cost.

A firmware host build (firmware-bridge/ports/posix, the real core) with a 50 ppm crystal on a pty
at 115200 baud; the bridge (`python -m tsq.bridge PATH --source system`) in its own process, pinging
once a second. The system clock is both the bridge's time source and the truth the firmware's truth
log compares against, so the figures are the device's real error, bridge and line included.
After `--warmup` seconds, prints |error| p50/p99/max over `--duration` seconds of truth rows (one a
second), how often the truth was inside the device's own bound, the bridge's view of the line (ping
delay and residual about its fit, from its device log) and the bridge process's CPU (% of one core)
and RSS.

    python3 benchmarks/bridge.py [--duration 120] [--warmup 150] [--ping-interval 1]
                                 [--device-rx-spin-ms 2000] [--single-ping]

The device stand-in stamps like an MCU (`--rx-spin-ms`, see firmware-bridge/ports/posix/main.c):
it never sleeps, so a frame's T2 is its arrival, as in an RX interrupt. Asleep in poll() on an idle
VM it stamps tens of microseconds late, a delay of the simulation that no real device has, and one
core is left to the bridge either way; `--device-rx-spin-ms 0` shows that case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tsq.fieldlog import read_rows
from tsq.testing.firmware import SimulatedDevice, build_host_firmware


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=120.0, help="measured seconds (default 120)")
    ap.add_argument("--warmup", type=float, default=150.0,
                    help="seconds before measuring (default 150: the fit window holds 128 pings)")
    ap.add_argument("--ping-interval", type=float, default=1.0)
    ap.add_argument("--drift-ppm", type=float, default=50.0)
    ap.add_argument("--device-rx-spin-ms", type=float, default=2000.0,
                    help="the simulated device polls its tty without sleeping for this long after each "
                         "read (default 2000, longer than a ping interval: always awake, as an MCU's RX "
                         "interrupt is; 0: it sleeps in poll() and its T2 waits for the scheduler)")
    ap.add_argument("--single-ping", action="store_true",
                    help="pass --single-ping to the bridge (no warm-up ping: one exchange per interval)")
    args = ap.parse_args()
    binary = build_host_firmware()
    with tempfile.TemporaryDirectory() as d, SimulatedDevice(d, device_id=0xBE4C, drift_ppm=args.drift_ppm,
                                                             offset_ms=5, binary=binary,
                                                             extra=("--rx-spin-ms",
                                                                    repr(args.device_rx_spin_ms))) as dev:
        path = [os.getcwd(), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        bridge = subprocess.Popen([sys.executable, "-m", "tsq.bridge", dev.path, "--source", "system",
                                   "--assume-bound", "1000", "--baud", "115200", "--ping-interval",
                                   str(args.ping_interval), "--control", os.path.join(d, "control.sock"),
                                   "--status-interval", "0", "--log", os.path.join(d, "log"),
                                   "--fsync-interval", "1", *(["--single-ping"] if args.single_ping else [])],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            time.sleep(args.warmup)
            start_ns, cpu0, t0 = time.time_ns(), _cpu_s(bridge.pid), time.monotonic()
            time.sleep(args.duration)
            cpu1, t1 = _cpu_s(bridge.pid), time.monotonic()
            rss = _rss_mb(bridge.pid)
            rows = [(e, b) for rt, e, b, s in dev.truth() if rt >= start_ns and s == 1 and e is not None
                    and b is not None]
        finally:
            bridge.terminate()
            bridge.wait(10)
        pings = [r for r in read_rows([os.path.join(d, "log")], "devices")
                 if r["residual_ns"] and r["line_delay_ns"]][-int(args.duration / args.ping_interval):]
        delays = [int(r["line_delay_ns"]) / 1000 for r in pings]
        resids = [abs(int(r["residual_ns"])) / 1000 for r in pings]
    if not rows:
        print("no synchronised truth rows: the device never synchronised", file=sys.stderr)
        return 1
    errs = [abs(e) / 1000 for e, _ in rows]
    inside = sum(1 for e, b in rows if abs(e) <= b)
    print(f"device: {args.drift_ppm:+g} ppm crystal, firmware host build over a pty, 115200 baud, "
          f"ping every {args.ping_interval:g} s {'(single)' if args.single_ping else '(after a warm-up)'}; "
          f"device RX spin {args.device_rx_spin_ms:g} ms; {len(rows)} truth rows after "
          f"{args.warmup:g} s warm-up")
    print(f"end-to-end |error|  p50 {_pct(errs, 0.5):8.1f} us  p99 {_pct(errs, 0.99):8.1f} us  "
          f"max {max(errs):8.1f} us   mean {sum(e for e, _ in rows) / len(rows) / 1000:+.1f} us   "
          f"inside own bound {100 * inside / len(rows):.1f}%")
    if delays:
        print(f"line delay p50 {_pct(delays, 0.5):8.1f} us  p99 {_pct(delays, 0.99):8.1f} us "
              f"|residual| p50 {_pct(resids, 0.5):6.1f} us  p99 {_pct(resids, 0.99):6.1f} us  "
              f"({len(delays)} accepted pings)")
    print(f"bridge process      CPU {100 * (cpu1 - cpu0) / (t1 - t0):.2f} % of one core   RSS {rss:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
