"""Per-exchange offset error of TSQ on loopback (true offset 0), beside chrony on the same loopback.

    python3 benchmarks/accuracy.py [--count 500] [--interval 0.01] [--no-chrony] [--relay]

Server and client are separate processes sharing the system clock, so the true offset of UTC from
CLOCK_MONOTONIC_RAW is known at every instant (bracketing reads of both clocks). Rows:
- kernel-stamped TSQ, interleaved T3 (the default sample: `TsqClient.sample()`), datagram and stream;
- the same with `paired=True` (two exchanges back to back per sample; the warm second one is used);
- kernel-stamped TSQ, basic T3 (stamped in the packet + measured stamp-to-wire minimum);
- the datagram rows again against a server with `--no-fast-path` (answers built by aioquic's
  generic packet path instead of tsq.quic.fast_exchange), for the before/after;
- user-space-stamped TSQ (server `--user-stamps`, client `kernel_stamps=False`): the straightforward way;
- chrony (`chronyd -x`, never touches the clock) server + client with `xleave` at minpoll -6, from
  its measurements log, when chronyd is installed.
`--relay` adds the impairment relay (2 ms ± 0.5 ms forward, 1 ms back) in front of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tsq import clock
from tsq.quic.client import TsqClient, TsqError
from tsq.sync.exchange import Exchange


class Truth:
    """UTC - raw over time, from bracketing clock reads, interpolated at any raw instant."""

    def __init__(self) -> None:
        self.raw: List[int] = []
        self.off: List[int] = []

    def mark(self) -> None:
        corr = clock.correlate(clock.CLOCK_REALTIME, clock.CLOCK_MONOTONIC_RAW)
        self.raw.append(corr.sys_ns)
        self.off.append(corr.ref_ns - corr.sys_ns)

    def at(self, raw_ns: int) -> int:
        i = bisect.bisect_left(self.raw, raw_ns)
        if i <= 0:
            return self.off[0]
        if i >= len(self.raw):
            return self.off[-1]
        r0, r1, o0, o1 = self.raw[i - 1], self.raw[i], self.off[i - 1], self.off[i]
        return o0 + (o1 - o0) * (raw_ns - r0) // max(1, r1 - r0)


def start_server(extra: Sequence[str] = ()) -> Tuple[subprocess.Popen[str], int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tsq", "server", "--ephemeral", "--listen", "127.0.0.1:0",
         "--stats-interval", "0", *extra],
        stdout=subprocess.PIPE, text=True, cwd=os.path.join(os.path.dirname(__file__), ".."),
    )
    assert proc.stdout is not None
    pin = port = None
    deadline = time.monotonic() + 20
    while (pin is None or port is None) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"pin (sha256/\S+)", line)
        if m:
            pin = m.group(1)
        m = re.search(r"listening on \S+:(\d+)", line)
        if m:
            port = int(m.group(1))
    if pin is None or port is None:
        proc.kill()
        raise RuntimeError("tsq server did not start")
    return proc, port, pin


async def tsq_errors(port: int, pin: str, mode: str, count: int, interval: float, *, kernel: bool,
                     interleaved: bool, paired: bool = False) -> Tuple[List[int], List[int], int]:
    """(signed errors ns, delays ns, failures) of `count` samples."""
    truth = Truth()
    client = TsqClient(f"127.0.0.1:{port}", pin=pin, kernel_stamps=kernel, interleaved=interleaved,
                       paired=paired, timeout_s=1.0)
    samples: List[Exchange] = []
    failures = 0
    with contextlib.suppress(TsqError):
        await client.sample(mode)  # connect + warm-up
    truth.mark()
    next_at = time.monotonic()
    for _ in range(count):
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        try:
            ex = await (client.sample(mode) if interleaved else client.exchange(mode))
            samples.append(ex)
        except TsqError:
            failures += 1
        truth.mark()
    await client.close()
    errors = [ex.offset_ns - truth.at((ex.t1_raw + ex.t4_raw) // 2) for ex in samples]
    return errors, [ex.delay_ns for ex in samples], failures


def chrony_errors(duration_s: float) -> Tuple[Optional[List[int]], str]:
    """Per-sample offsets (ns) from a chronyd client polling a chronyd server on loopback."""
    chronyd = shutil.which("chronyd") or shutil.which("chronyd", path="/usr/sbin:/sbin")
    if chronyd is None:
        return None, "chronyd not installed"
    tmp = tempfile.mkdtemp(prefix="tsq-chrony-")
    port = 11123
    server_conf = os.path.join(tmp, "server.conf")
    client_conf = os.path.join(tmp, "client.conf")
    logdir = os.path.join(tmp, "log")
    os.makedirs(logdir)
    with open(server_conf, "w") as fh:
        fh.write(f"port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 1\ncmdport 0\n"
                 f"pidfile {tmp}/server.pid\ndriftfile {tmp}/server.drift\n")
    with open(client_conf, "w") as fh:
        fh.write(f"server 127.0.0.1 port {port} minpoll -6 maxpoll -6 xleave\nport 0\ncmdport 0\n"
                 f"pidfile {tmp}/client.pid\nlogdir {logdir}\nlog measurements rawmeasurements\n"
                 f"driftfile {tmp}/client.drift\n")
    # -x: never touch the system clock. -u root: the temp dir is root's. -d: foreground.
    procs = [subprocess.Popen([chronyd, "-x", "-d", "-u", "root", "-f", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for conf in (server_conf, client_conf)]
    try:
        time.sleep(duration_s)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    path = os.path.join(logdir, "measurements.log")
    if not os.path.exists(path):
        err = procs[1].stderr.read() if procs[1].stderr else ""
        return None, f"no chrony measurements ({err.strip()[-200:]})"
    offsets = []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            # Date Time IP L St 123 567 ABCD LP RP Score Offset Peer-del Peer-disp Root-del ...
            if len(parts) < 13 or not parts[0][0].isdigit() or parts[2] != "127.0.0.1":
                continue
            offsets.append(round(float(parts[11]) * 1e9))
    shutil.rmtree(tmp, ignore_errors=True)
    return offsets[2:], "chronyd -x, xleave, minpoll -6 (1/64 s)"  # first two: start-up


def row(name: str, errors: List[int], delays: Optional[List[int]] = None, failures: int = 0) -> str:
    if not errors:
        return f"{name:<46} no samples"
    mags = sorted(abs(e) for e in errors)

    def pct(p: float) -> float:
        return mags[min(len(mags) - 1, int(p * len(mags)))] / 1e3

    text = (f"{name:<46} n={len(errors):<4} |err| p50 {pct(0.5):8.3f}  p99 {pct(0.99):8.3f}  "
            f"max {mags[-1] / 1e3:8.3f}  mean {statistics.fmean(errors) / 1e3:+8.3f} µs")
    if delays:
        text += f"  delay p50 {statistics.median(delays) / 1e3:7.1f} µs"
    if failures:
        text += f"  rejected/failed {failures}"
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--no-chrony", action="store_true")
    ap.add_argument("--relay", action="store_true", help="2 ms ± 0.5 ms forward, 1 ms back")
    args = ap.parse_args()
    print(f"clock backend {clock.BACKEND}; {args.count} samples {args.interval * 1e3:g} ms apart; "
          f"errors are sample offset minus the true offset (0 on one host)")
    results: Dict[str, str] = {}
    configs = [
        ("TSQ datagram, kernel stamps, interleaved T3", "datagram", "kernel", True, False),
        ("TSQ stream,   kernel stamps, interleaved T3", "stream", "kernel", True, False),
        ("TSQ datagram, kernel, interleaved, warm pair", "datagram", "kernel", True, True),
        ("TSQ datagram, kernel stamps, basic T3", "datagram", "kernel", False, False),
        ("TSQ stream,   kernel stamps, basic T3", "stream", "kernel", False, False),
        # The same server without its DATAGRAM fast path: the answers aioquic's generic path builds.
        ("TSQ datagram, interleaved T3, --no-fast-path", "datagram", "generic", True, False),
        ("TSQ datagram, basic T3, --no-fast-path", "datagram", "generic", False, False),
        ("TSQ datagram, user-space stamps", "datagram", "user", False, False),
        ("TSQ stream,   user-space stamps", "stream", "user", False, False),
    ]
    servers = {"kernel": [], "generic": ["--no-fast-path"], "user": ["--user-stamps"]}
    for server, server_args in servers.items():
        kernel = server != "user"
        proc, port, pin = start_server(server_args)
        relay = None
        try:
            target = port
            if args.relay:  # its own process: a relay thread here would queue behind the client
                relay = subprocess.Popen(
                    [sys.executable, "-m", "tsq.testing.relay", "--upstream", f"127.0.0.1:{port}",
                     "--fwd-delay-ms", "2", "--fwd-jitter-ms", "0.5", "--back-delay-ms", "1"],
                    stdout=subprocess.PIPE, text=True, cwd=os.path.join(os.path.dirname(__file__), ".."))
                assert relay.stdout is not None
                target = int(relay.stdout.readline().split()[1].rsplit(":", 1)[1])
            for name, mode, which, interleaved, paired in configs:
                if which != server:
                    continue
                errs, delays, fails = asyncio.run(
                    tsq_errors(target, pin, mode, args.count, args.interval, kernel=kernel,
                               interleaved=interleaved, paired=paired))
                results[name] = row(name, errs, delays, fails)
                print(results[name], flush=True)
        finally:
            if relay is not None:
                relay.terminate()
                relay.wait(10)
            proc.terminate()
            proc.wait(10)
    if not args.no_chrony and not args.relay:
        chrony, how = chrony_errors(max(5.0, args.count / 64))
        if chrony is None:
            print(f"{'chrony':<46} skipped: {how}")
        else:
            print(row(f"chrony ({how})", chrony), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
