"""A UDP impairment relay on loopback (this kernel has no netem): delay, jitter, asymmetry, loss,
duplication, reordering and delay bursts per direction, and NAT rebinding.

    relay = UdpRelay(("127.0.0.1", server_port), forward=Impairment(delay_s=0.002, jitter_s=0.0005),
                     backward=Impairment(delay_s=0.001))
    relay.start(); ...connect to relay.address...; relay.stop()

It runs in its own thread, so the process under test keeps its event loop. Each client address
gets its own upstream socket (its "NAT mapping"), so the server sees one peer per client as it would
without the relay. `python -m tsq.testing.relay --help` runs one from the shell.

Bursts (`Impairment.burst_every_s`, tsq.testing.bursts): an LTE-like link's seconds of hundreds of
ms extra delay. NAT rebinding, as a carrier-grade NAT does: with `nat_idle_s` a mapping that saw no
datagram from the client for that long expires; with `rebind_every_s` it expires that long after it
was made even while in use. Either way the next datagram from the client leaves from a new upstream
socket, so the server sees the client's address (port) change, and whatever the server still sends
to the old one is dropped, as a NAT drops traffic to a mapping it no longer has (`counters.rebinds`,
`counters.nat_dropped`).

Counters include the payload bytes each way (bytes per day of a link); the CLI prints them as
`stats {json}` every `--stats-interval` s and at exit (SIGTERM too). `--drop-all-file PATH` drops
everything both ways while PATH exists: an outage of the path without restarting the relay.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tsq import clock
from tsq.testing.bursts import BurstSchedule

Address = Tuple[Any, ...]


@dataclass(frozen=True)
class Impairment:
    """What happens to datagrams in one direction."""

    delay_s: float = 0.0       # base one-way delay added
    jitter_s: float = 0.0      # uniform ±jitter_s on top of the delay
    loss: float = 0.0          # probability a datagram is dropped
    duplicate: float = 0.0     # probability a datagram is sent twice
    reorder: float = 0.0       # probability a datagram is held back by reorder_s (overtaken)
    reorder_s: float = 0.002
    burst_every_s: float = 0.0  # mean time between delay bursts (0: none), tsq.testing.bursts
    burst_length_s: float = 2.0   # mean length of a burst
    burst_delay_s: float = 0.0  # mean extra delay (exponential) of a datagram inside a burst

    def bursts(self, seed: object) -> Optional[BurstSchedule]:
        """The burst schedule of this direction (None without bursts)."""
        if not self.burst_every_s:
            return None
        return BurstSchedule(self.burst_every_s, self.burst_length_s, self.burst_delay_s, seed=seed,
                             start_s=time.monotonic())

    def delays(self, rng: random.Random, extra_s: float = 0.0) -> List[float]:
        """The send delays of the copies of one datagram (empty when lost); `extra_s` is a burst's."""
        if self.loss and rng.random() < self.loss:
            return []
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        out = []
        for _ in range(copies):
            d = self.delay_s + extra_s
            if self.jitter_s:
                d += rng.uniform(-self.jitter_s, self.jitter_s)
            if self.reorder and rng.random() < self.reorder:
                d += self.reorder_s
            out.append(max(0.0, d))
        return out


@dataclass
class RelayCounters:
    forwarded: int = 0
    returned: int = 0
    dropped: int = 0
    duplicated: int = 0
    rebinds: int = 0           # NAT mappings replaced (the server saw a new client port)
    nat_dropped: int = 0       # datagrams from the server to a mapping that had expired
    bytes_in: int = 0          # UDP payload bytes received from clients (before loss)
    bytes_out: int = 0         # UDP payload bytes received from the server for clients (before loss)
    datagrams_in: int = 0
    datagrams_out: int = 0

    def to_json(self) -> Dict[str, int]:
        return dict(vars(self))


@dataclass
class _Mapping:
    sock: socket.socket
    client: Address
    created: float
    last_out: float


class UdpRelay:
    """Relays datagrams between clients (on `address`) and `upstream`, impaired per direction."""

    def __init__(self, upstream: Address, *, forward: Impairment = Impairment(),
                 backward: Impairment = Impairment(), listen: Address = ("127.0.0.1", 0),
                 seed: Optional[int] = None, nat_idle_s: Optional[float] = None,
                 rebind_every_s: Optional[float] = None, drop_all_file: Optional[str] = None) -> None:
        self.upstream = upstream
        self.drop_all_file = drop_all_file
        self._drop_checked = -1.0
        self._dropping = False
        self.forward = forward
        self.backward = backward
        self.nat_idle_s = nat_idle_s
        self.rebind_every_s = rebind_every_s
        self.counters = RelayCounters()
        self._rng = random.Random(seed)
        self._bursts = {True: forward.bursts(f"{seed}:fwd"), False: backward.bursts(f"{seed}:back")}
        self._front = socket.socket(socket.AF_INET6 if ":" in str(listen[0]) else socket.AF_INET,
                                    socket.SOCK_DGRAM)
        self._front.bind(listen)
        self._front.setblocking(False)
        clock.enable_timestamps(self._front, tx=False)
        self.address: Address = self._front.getsockname()
        self._by_client: Dict[Address, _Mapping] = {}
        self._by_sock: Dict[socket.socket, _Mapping] = {}
        self._queue: List[Tuple[float, int, socket.socket, bytes, Optional[Address]]] = []
        self._seq = 0
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._front, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)

    @property
    def port(self) -> int:
        return int(self.address[1])

    def start(self) -> UdpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for sock in [self._front, self._wake_r, self._wake_w, *self._by_sock]:
            sock.close()

    def __enter__(self) -> UdpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _schedule(self, impairment: Impairment, sock: socket.socket, data: bytes,
                  addr: Optional[Address], forward: bool, arrived: float) -> None:
        if self._drop_all(arrived):
            self.counters.dropped += 1
            return
        bursts = self._bursts[forward]
        delays = impairment.delays(self._rng, 0.0 if bursts is None else bursts.extra_s(arrived))
        if not delays:
            self.counters.dropped += 1
            return
        if len(delays) > 1:
            self.counters.duplicated += 1
        now = arrived
        for d in delays:
            self._seq += 1
            heapq.heappush(self._queue, (now + d, self._seq, sock, data, addr))
        if forward:
            self.counters.forwarded += 1
        else:
            self.counters.returned += 1

    def _drop_all(self, now: float) -> bool:
        """Whether the outage file exists (looked at no more than 10 times a second)."""
        if self.drop_all_file is None:
            return False
        if now - self._drop_checked >= 0.1:
            self._drop_checked = now
            self._dropping = os.path.exists(self.drop_all_file)
        return self._dropping

    def _expired(self, m: _Mapping, now: float) -> bool:
        return ((self.nat_idle_s is not None and now - m.last_out > self.nat_idle_s)
                or (self.rebind_every_s is not None and now - m.created > self.rebind_every_s))

    def _upstream_for(self, client: Address, now: float) -> socket.socket:
        m = self._by_client.get(client)
        if m is not None and self._expired(m, now):
            # The mapping is gone: a new one takes a new port. The old socket stays open (and
            # registered) only to drop, and count, what the server still sends to it.
            self.counters.rebinds += 1
            del self._by_client[client]
            m = None
        if m is None:
            sock = socket.socket(self._front.family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            clock.enable_timestamps(sock, tx=False)
            sock.connect(self.upstream)
            m = _Mapping(sock, client, now, now)
            self._by_client[client] = m
            self._by_sock[sock] = m
            self._sel.register(sock, selectors.EVENT_READ)
            self._close_stale(now)
        m.last_out = now
        return m.sock

    def _close_stale(self, now: float) -> None:
        """Close expired mappings' sockets a minute after they expired (bounded socket count)."""
        live = {id(m) for m in self._by_client.values()}
        for sock, m in list(self._by_sock.items()):
            if id(m) not in live and now - m.last_out > 60.0 + (self.nat_idle_s or 0.0):
                self._sel.unregister(sock)
                sock.close()
                del self._by_sock[sock]

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = None
            if self._queue:
                left = self._queue[0][0] - time.monotonic()
                if left < 0.0015:
                    # epoll waits whole milliseconds (rounded up): sleep the rest precisely; what
                    # arrives meanwhile keeps its kernel arrival stamp, so its delay is exact too.
                    if left > 0:
                        time.sleep(left)
                    timeout = 0.0
                else:
                    timeout = left - 0.0011
            for key, _ in self._sel.select(timeout):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_r:
                    continue
                self._drain(sock)
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, out, data, addr = heapq.heappop(self._queue)
                try:
                    if addr is None:
                        out.send(data)
                    else:
                        out.sendto(data, addr)
                except OSError:
                    pass  # a closed server port: the datagram is lost, as on a network

    def _drain(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, addr, stamp = clock.recv_timestamped(sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP from a stopped upstream
            arrived = time.monotonic()
            if stamp is not None:  # when it arrived, not when this thread got round to it
                arrived -= max(0, clock.realtime_ns() - stamp) / 1e9
            if sock is self._front:
                self.counters.bytes_in += len(data)
                self.counters.datagrams_in += 1
                self._schedule(self.forward, self._upstream_for(tuple(addr), arrived), data, None, True,
                               arrived)
            else:
                m = self._by_sock.get(sock)
                if m is None:
                    continue
                self.counters.bytes_out += len(data)
                self.counters.datagrams_out += 1
                if self._by_client.get(m.client) is not m or self._expired(m, arrived):
                    self.counters.nat_dropped += 1     # the NAT has no mapping for it any more
                    continue
                self._schedule(self.backward, self._front, data, m.client, False, arrived)


def _ms(text: str) -> float:
    return float(text) / 1000.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tsq.testing.relay", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    for d in ("fwd", "back"):
        p.add_argument(f"--{d}-delay-ms", type=_ms, default=0.0)
        p.add_argument(f"--{d}-jitter-ms", type=_ms, default=0.0)
        p.add_argument(f"--{d}-loss", type=float, default=0.0)
        p.add_argument(f"--{d}-duplicate", type=float, default=0.0)
        p.add_argument(f"--{d}-reorder", type=float, default=0.0)
        p.add_argument(f"--{d}-burst-every-s", type=float, default=0.0,
                       help="mean seconds between delay bursts (0: none)")
        p.add_argument(f"--{d}-burst-length-s", type=float, default=2.0, help="mean burst length")
        p.add_argument(f"--{d}-burst-delay-ms", type=_ms, default=0.0,
                       help="mean extra delay inside a burst (exponential)")
    p.add_argument("--nat-idle-s", type=float, metavar="S",
                   help="NAT rebinding: a client's mapping (upstream port) expires after S s without "
                        "a datagram from it")
    p.add_argument("--rebind-every-s", type=float, metavar="S",
                   help="NAT rebinding: a client's mapping expires S s after it was made, even in use")
    p.add_argument("--seed", type=int)
    p.add_argument("--stats-interval", type=float, default=0.0, metavar="S",
                   help="print the counters as a line 'stats {json}' every S s (0: only at exit)")
    p.add_argument("--drop-all-file", metavar="PATH",
                   help="while PATH exists, drop every datagram both ways (an outage without a restart)")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    uhost, _, uport = args.upstream.rpartition(":")

    def imp(d: str) -> Impairment:
        return Impairment(getattr(args, f"{d}_delay_ms"), getattr(args, f"{d}_jitter_ms"),
                          getattr(args, f"{d}_loss"), getattr(args, f"{d}_duplicate"),
                          getattr(args, f"{d}_reorder"), burst_every_s=getattr(args, f"{d}_burst_every_s"),
                          burst_length_s=getattr(args, f"{d}_burst_length_s"),
                          burst_delay_s=getattr(args, f"{d}_burst_delay_ms"))

    relay = UdpRelay((uhost, int(uport)), forward=imp("fwd"), backward=imp("back"),
                     listen=(host, int(port)), seed=args.seed, nat_idle_s=args.nat_idle_s,
                     rebind_every_s=args.rebind_every_s, drop_all_file=args.drop_all_file).start()
    print(f"relay {relay.address[0]}:{relay.port} -> {args.upstream}", flush=True)

    def stats() -> None:
        print("stats " + json.dumps(relay.counters.to_json()), flush=True)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)   # a SIGTERM still prints the final counters
    try:
        while True:
            time.sleep(args.stats_interval or 3600)
            if args.stats_interval:
                stats()
    except KeyboardInterrupt:
        relay.stop()
        stats()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
