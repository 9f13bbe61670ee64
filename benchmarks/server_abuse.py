"""A flood of spoofed-source QUIC Initials against `tsq server`, and a legitimate client beside it.

    python3 benchmarks/server_abuse.py [--count 2400] [--seconds 2.4] [--sources 48]
                                       [--max-connections 1000]

The scenario of issue 12, on loopback: `--count` Initials of at least 1200 B from `--sources`
addresses in 127.0.0.0/8 (every 127.x.y.z is local on Linux, so a socket can be bound to it and
the packets really come from there; nobody there ever reads a reply), sent evenly over
`--seconds`. Half are garbage that merely parses as an Initial (random payload), half are real
ClientHellos built by aioquic's client, each from a fresh connection that never answers. Meanwhile a
legitimate client on 127.0.0.1 opens a new connection and makes one exchange every 50 ms, during
the flood and for `--after` seconds after it.

Printed: the server's connection count and RSS before, at the end of and after the flood (from its
statistics lines and /proc), its CPU time per flood packet, the legitimate client's success rate and
connect times during and after the flood, and the lock-out time (the longest run of failed
attempts). Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from tsq.quic.client import TsqClient, TsqError, TsqInvalidResponse
from tsq.quic.trust import ALPN_TSQ

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_load import cpu_seconds, rss_kb, write_keys  # the neighbour script

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def garbage_initial() -> bytes:
    """A datagram that parses as a version-1 Initial (1200 B) and decrypts to nothing."""
    dcid, scid = os.urandom(8), os.urandom(8)
    body = os.urandom(1200 - 1 - 4 - 1 - 8 - 1 - 8 - 1 - 2)
    length = len(body)
    return (bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + b"\x00"
            + (0x4000 | length).to_bytes(2, "big") + body)


def real_initial(server: Tuple[str, int]) -> bytes:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[ALPN_TSQ],
                                                          verify_mode=ssl.CERT_NONE))
    quic.connect(server, now=time.monotonic())
    return quic.datagrams_to_send(now=time.monotonic())[0][0]


def flood(server: Tuple[str, int], packets: List[bytes], seconds: float, sources: int,
          report: multiprocessing.queues.Queue[Tuple[int, int, float, float]]) -> None:
    """Send `packets` evenly over `seconds` from `sources` addresses (a process of its own)."""
    socks = []
    for i in range(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"127.1.{i // 250}.{1 + i % 250}", 0))
        sock.setblocking(False)
        socks.append(sock)
    count = len(packets)
    sent = sent_bytes = 0
    t0 = time.monotonic()
    for i, data in enumerate(packets):
        at = t0 + seconds * i / count
        while time.monotonic() < at:
            time.sleep(min(0.001, max(0.0, at - time.monotonic())))
        try:
            socks[i % sources].sendto(data, server)
            sent += 1
            sent_bytes += len(data)
        except BlockingIOError:
            pass
    for sock in socks:
        sock.close()
    report.put((sent, sent_bytes, t0, time.monotonic()))


class Watch:
    """The server's stderr statistics lines (connections=N) and RSS, sampled as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.connections: List[Tuple[float, int]] = []
        self.lines: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"stats connections=(\d+)", line)
            if m:
                self.connections.append((time.monotonic(), int(m.group(1))))

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)


async def legitimate(port: int, pin: str, after_s: float, flooder: multiprocessing.Process,
                     failures: List[str]) -> List[Tuple[float, bool, Optional[float], bool]]:
    """(time, success, connect seconds, during flood) of one new connection + exchange per 50 ms,
    while the flood runs and for `after_s` seconds after it."""
    out = []
    until: Optional[float] = None
    while until is None or time.monotonic() < until:
        t = time.monotonic()
        during = flooder.is_alive()
        if not during and until is None:
            until = t + after_s
        c = TsqClient(f"127.0.0.1:{port}", pin=pin, connect_timeout_s=2.0, timeout_s=1.0)
        connected: Optional[float] = None
        try:
            await c.connect()
            connected = time.monotonic() - t
            await c.exchange()
            out.append((t, True, connected, during))
        except TsqInvalidResponse:
            # Answered; only the §6.6 sanity check rejected it (a sub-µs negative loopback RTT).
            out.append((t, True, connected, during))
        except TsqError as exc:
            out.append((t, False, None, during))
            failures.append(str(exc))
        finally:
            await c.close()
        await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - t)))
    return out


def lockout(results: List[Tuple[float, bool, Optional[float], bool]]) -> float:
    longest, start = 0.0, None
    for t, ok, _, _ in results:
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            longest, start = max(longest, t - start), None
    if start is not None and results:
        longest = max(longest, results[-1][0] - start)
    return longest


def summary(label: str, rows: List[Tuple[float, bool, Optional[float], bool]]) -> str:
    if not rows:
        return f"{label}: no attempts"
    ok = [r for r in rows if r[1]]
    times = sorted(r[2] * 1000 for r in ok if r[2] is not None)
    p50 = statistics.median(times) if times else float("nan")
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))] if times else float("nan")
    return (f"{label}: {len(ok)}/{len(rows)} succeeded ({100 * len(ok) / len(rows):.1f} %), "
            f"connect p50 {p50:.1f} ms p99 {p99:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2400)
    ap.add_argument("--seconds", type=float, default=2.4)
    ap.add_argument("--sources", type=int, default=48)
    ap.add_argument("--after", type=float, default=3.0)
    ap.add_argument("--max-connections", type=int, default=1000)
    args = ap.parse_args()
    if not 1 <= args.sources <= 1000 or args.count > 200_000 or args.seconds > 120:
        ap.error("bounded: 1-1000 sources, at most 200000 packets over at most 120 s")
    tmp = tempfile.mkdtemp(prefix="tsq-abuse-")
    cert, key, pin = write_keys(tmp)
    proc = subprocess.Popen([sys.executable, "-m", "tsq", "server", "--listen", "127.0.0.1:0", "--cert", cert,
                             "--key", key, "--max-connections", str(args.max_connections), "--stats-interval",
                             "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        port = 0
        while not port:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("server did not start")
            m = re.search(r"listening on \S+:(\d+)", line)
            port = int(m.group(1)) if m else 0
        watch = Watch(proc)
        time.sleep(1.0)
        server = ("127.0.0.1", port)
        packets = [garbage_initial() if i % 2 == 0 else real_initial(server) for i in range(args.count)]
        report: multiprocessing.Queue[Tuple[int, int, float, float]] = multiprocessing.Queue()
        fork = multiprocessing.get_context("fork")
        # First the flood alone: the server's CPU per flood packet.
        cpu_a = watch.cpu_s()
        alone = fork.Process(target=flood, args=(server, packets, args.seconds, args.sources, report))
        alone.start()
        alone.join()
        time.sleep(0.5)
        per_packet_us = (watch.cpu_s() - cpu_a) * 1e6 / max(1, report.get(timeout=10)[0])
        # Then again with the legitimate client beside it.
        rss0, cpu0 = watch.rss_kb(), watch.cpu_s()
        flooder = fork.Process(target=flood, args=(server, packets, args.seconds, args.sources, report))
        t0 = time.monotonic()
        flooder.start()
        failures: List[str] = []
        rows = asyncio.run(legitimate(port, pin, args.after, flooder, failures))
        flooder.join()
        rss1, cpu1 = watch.rss_kb(), watch.cpu_s()
        sent, sent_bytes, f0, f1 = report.get(timeout=10)
        during = [r for r in rows if r[3]]
        after = [r for r in rows if not r[3]]
        peak = max((n for t, n in watch.connections if t >= t0), default=0)
        print(f"flood: {sent} Initials, {sent_bytes / 1e6:.2f} MB from {args.sources} spoofed addresses "
              f"in {f1 - f0:.2f} s (half garbage, half real ClientHellos that never answer)")
        print(f"server: peak connections {peak} (limit {args.max_connections}); RSS {rss0} kB before, "
              f"{rss1} kB after (+{rss1 - rss0} kB); CPU {per_packet_us:.0f} µs per flood packet (flood "
              f"alone), {cpu1 - cpu0:.2f} s over the run with the legitimate client")
        stats = [line for line in watch.lines if "stats connections=" in line]
        totals = {}
        for line in stats:
            for key_, value in re.findall(r"(\w+)=(\d+)", line):
                if key_ != "connections" and key_ != "t3_residual_ns":
                    totals[key_] = totals.get(key_, 0) + int(value)
        print("server counters over the run: " + " ".join(
            f"{k}={totals.get(k, 0)}" for k in ("retries_sent", "validated", "tokens_invalid",
                                                 "unvalidated_dropped", "connections_opened",
                                                 "connections_refused", "handler_failures")))
        print(summary("legitimate client during the flood", during))
        print(summary("legitimate client after the flood ", after))
        print(f"lock-out (longest run of failed attempts): {lockout(rows):.2f} s")
        for why in sorted(set(failures)):
            print(f"  failed attempt: {why} (x{failures.count(why)})")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
