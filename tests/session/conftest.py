"""A ClientSession wired to a ServerSession in simulated time (no sockets, no asyncio, no clock).

`Link` plays the I/O edges and the network the way tsq/testing/simclock.py's `_pump`/`_at_server`
do: it takes the client's Outgoing messages, reports their departure (T1), hands each to the server
session with its T2, stamps T3 into the server's ResponseBuilder, reports the server's kernel TX
time (what the next `xleave-tx` carries) and returns the bytes to the client with T4. Every clock
reading is `Link.raw` (the client's raw clock) or `Link.utc` (true UTC; the gateway's system clock
reads raw + UTC_MINUS_RAW exactly, the server's clock is true UTC + `server_error_ns`). Both legs
take `delay_ns`; the server stamps T3 `tx_lag_ns` before its answer leaves, so a basic sample is off
by -tx_lag_ns/2 and an interleaved one (T3 = the TX time) measures the true offset.

With `serve=False` there is no server: the test reads what the client sent (`link.sent`) and
answers with hand-made bytes (`link.reply(...)`, `link.datagram(...)`, `link.stream(...)`).
Helpers are reached through the `make_link` fixture (the test modules are imported with
`--import-mode=importlib`, so they cannot import this file).
"""

from __future__ import annotations

import collections
import itertools
from types import SimpleNamespace
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

import pytest

from tsq import wire
from tsq.ntp import ntp64_to_unix_ns, unix_ns_to_ntp64
from tsq.session.client import (
    ClientOptions,
    ClientSession,
    Discarded,
    Event,
    Instant,
    JobDone,
    ModeFallback,
    Outgoing,
    Stalled,
    StopReading,
)
from tsq.session.server import (
    Answer,
    RateLimiter,
    SendError,
    ServerPolicy,
    ServerSession,
    ServerStats,
    stamp_paths,
)
from tsq.session.xleave import format_xleave

NS = 1_000_000_000
MS = 1_000_000
US = 1_000
UTC_MINUS_RAW = 1_795_000_000 * NS      # late 2026: the gateway's realtime = raw + this
RAW_START = 10_000 * NS


def counter_nonces() -> Callable[[int], bytes]:
    """Deterministic nonces 1, 2, 3, ... (big-endian), so tests can name them."""
    count = itertools.count(1)
    return lambda size: next(count).to_bytes(size, "big")


def ntp_round(unix_ns: int) -> int:
    """`unix_ns` after a trip through a 64-bit NTP timestamp (2**-32 s resolution)."""
    return ntp64_to_unix_ns(unix_ns_to_ntp64(unix_ns), unix_ns)


def stamp_t3(builder: wire.ResponseBuilder, t3_unix: int) -> bytes:
    """What a server does last: write T3 into the response, then sign it (if it signs)."""
    at = builder.send_ts_offset
    builder.buffer[at:at + 8] = unix_ns_to_ntp64(t3_unix).to_bytes(8, "big")
    return builder.finish()


def request_nonce(out: Outgoing) -> bytes:
    return wire.decode_request(out.data).nonce


class Link:
    """One client session, one server session, one simulated network path between them."""

    def __init__(self, options: Optional[ClientOptions] = None, policy: Optional[ServerPolicy] = None, *,
                 alpn: Optional[str] = "tsq", peer_datagrams: bool = True, offer_datagrams: bool = True,
                 delay_ns: int = MS, turnaround_ns: int = 20 * US, tx_lag_ns: int = 5 * US,
                 server_error_ns: int = 0, limiter: Optional[RateLimiter] = None, serve: bool = True,
                 connect: bool = True) -> None:
        self.raw = RAW_START
        self.options = options or ClientOptions(name="srv")
        self.client = ClientSession(self.options, offer_datagrams, counter_nonces())
        self.stats = ServerStats()
        self.server = ServerSession(policy or ServerPolicy(), self.stats, stamp_paths(), "192.0.2.7", limiter)
        self.alpn = alpn
        self.peer_datagrams = peer_datagrams
        self.serve = serve
        self.delay_ns = delay_ns
        self.turnaround_ns = turnaround_ns
        self.tx_lag_ns = tx_lag_ns
        self.server_error_ns = server_error_ns
        # The network: which requests / answers are lost, and whether the server's QUIC stack is
        # still heard from (its ACKs) when a TSQ answer does not come.
        self.lose_request: Callable[[Outgoing], bool] = lambda out: False
        self.lose_reply: Callable[[Outgoing], bool] = lambda out: False
        self.acks = True
        self.tamper: Callable[[Outgoing, bytes], bytes] = lambda out, data: data
        self.sent: List[Outgoing] = []          # every message the client sent, in order
        self.t1: Dict[int, int] = {}            # key -> raw T1
        self.stops: List[StopReading] = []
        self.events: List[Event] = []
        self.replies: List[Tuple[Outgoing, bytes]] = []   # what the server answered (before loss)
        self.tx_reports: List[Tuple[bytes, int]] = []     # (nonce, server TX ns) per answer
        self._flight: Deque[Outgoing] = collections.deque()
        self._stream_ids: Dict[int, int] = {}
        self._next_stream = 0
        self._answered: Set[int] = set()
        if connect:
            self.connect()

    # ------------------------------------------------------------------------------ clocks
    def now(self) -> Instant:
        return Instant(self.raw, self.raw + UTC_MINUS_RAW)

    @property
    def utc(self) -> int:
        return self.raw + UTC_MINUS_RAW

    def advance(self, ns: int) -> None:
        assert ns >= 0
        self.raw += ns

    def server_time(self) -> int:
        return self.utc + self.server_error_ns

    # ------------------------------------------------------------------------------ edges
    def connect(self) -> None:
        self.client.handshake_completed(self.now(), self.alpn, self.peer_datagrams)
        self.server.handshake_completed(self.alpn)

    def pump(self) -> None:
        """What the client edge does after every input: send, report T1, collect events."""
        for out in self.client.take_outgoing():
            if isinstance(out, Outgoing):
                self.client.sent(out.key, self.raw)
                self.t1[out.key] = self.raw
                self.sent.append(out)
                if self.serve:
                    self._flight.append(out)
            else:
                self.stops.append(out)
        while True:
            event = self.client.next_event()
            if event is None:
                break
            self.events.append(event)

    def done(self, job: int) -> Optional[JobDone]:
        self.pump()
        for event in self.events:
            if isinstance(event, JobDone) and event.job == job:
                return event
        return None

    def of(self, kind: type) -> List[Any]:
        self.pump()
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def discarded(self) -> List[str]:
        return [e.reason for e in self.of(Discarded)]

    @property
    def stalls(self) -> List[Stalled]:
        return self.of(Stalled)

    @property
    def fallbacks(self) -> List[ModeFallback]:
        return self.of(ModeFallback)

    # ------------------------------------------------------------------------------ driving
    def step(self) -> None:
        """Deliver the next message in flight, else let time run to the client's next deadline."""
        self.pump()
        if self._flight:
            self._round_trip(self._flight.popleft())
        else:
            at = self.client.next_deadline()
            assert at is not None, "nothing in flight and no deadline: the job can never end"
            self.advance(max(0, at - self.raw))
            self.client.handle_timer(self.now())
        self.pump()

    def run(self, job: int, limit: int = 200) -> JobDone:
        for _ in range(limit):
            done = self.done(job)
            if done is not None:
                return done
            self.step()
        raise AssertionError(f"job {job} did not end in {limit} steps")

    def sample(self, mode: str = "auto") -> JobDone:
        return self.run(self.client.start_sample(self.now(), mode))

    def exchange(self, mode: str = "auto") -> JobDone:
        return self.run(self.client.start_exchange(self.now(), mode))

    # ------------------------------------------------------------------------------ the network
    def _stream_id(self, key: int) -> int:
        if key not in self._stream_ids:
            self._stream_ids[key] = self._next_stream
            self._next_stream += 4
        return self._stream_ids[key]

    def _heard(self) -> None:
        if self.acks:
            self.client.packet_received(self.raw)

    def _round_trip(self, out: Outgoing) -> None:
        self.advance(self.delay_ns)
        if self.lose_request(out):
            self.advance(self.delay_ns)
            self._heard()
            return
        t2 = self.server_time()
        secs = self.raw / NS
        if out.mode == "datagram":
            actions = self.server.datagram_received(out.data, t2, secs)
        else:
            sid = self._stream_id(out.key)
            actions = self.server.stream_data(sid, out.data, True, t2) + self.server.packet_done(secs)
        self.advance(self.turnaround_ns)
        answers: List[bytes] = []
        for action in actions:
            if isinstance(action, Answer):
                t3 = self.server_time()
                payload = stamp_t3(action.builder, t3)
                self.advance(self.tx_lag_ns)     # T3 is stamped a little before the packet leaves
                tx = self.server_time()
                self.server.response_sent(action.nonce, action.path, t3, tx)
                self.tx_reports.append((action.nonce, tx))
                answers.append(payload)
            elif isinstance(action, SendError):
                answers.append(action.payload)
        self.advance(self.delay_ns)
        for payload in answers:
            self.replies.append((out, payload))
        if self.lose_reply(out) or not answers:
            self._heard()
            return
        for payload in answers:
            data = self.tamper(out, payload)
            if out.mode == "datagram":
                self.datagram(data)
            else:
                self.stream(out, [data], fin=True)

    # ------------------------------------------------------------------------------ hand-made input
    def datagram(self, data: bytes, rx_raw: Optional[int] = None, kernel: bool = True) -> None:
        """One packet carrying one DATAGRAM frame."""
        now = self.now()
        self.client.packet_received(self.raw)
        self.client.datagram_received(now, data, self.raw if rx_raw is None else rx_raw, kernel)
        self.client.packet_done(now)
        self.pump()

    def stream(self, out: Outgoing, chunks: Sequence[bytes], fin: bool = False, gap_ns: int = 0,
               kernel: bool = True) -> List[int]:
        """Each chunk in its own packet, `gap_ns` apart; FIN with the last one. Returns the RX times."""
        rx: List[int] = []
        for i, chunk in enumerate(chunks):
            if i:
                self.advance(gap_ns)
            self.client.packet_received(self.raw)
            self.client.stream_data(out.key, chunk, fin and i == len(chunks) - 1, self.raw, kernel)
            self.client.packet_done(self.now())
            rx.append(self.raw)
        self.pump()
        return rx

    def fin(self, out: Outgoing) -> None:
        """A packet carrying only the FIN of `out`'s response stream."""
        self.client.packet_received(self.raw)
        self.client.stream_data(out.key, b"", True, self.raw, True)
        self.client.packet_done(self.now())
        self.pump()

    def answer(self, job: int, **reply: Any) -> JobDone:
        """serve=False: answer each request with `self.reply(out, **reply)` 2 ms later until `job` ends."""
        while True:
            done = self.done(job)
            if done is not None:
                return done
            waiting = [o for o in self.sent if o.key not in self._answered]
            assert waiting, f"job {job} waits for nothing"
            for out in waiting:
                self._answered.add(out.key)
                self.advance(2 * MS)
                data = self.reply(out, **reply)
                if out.mode == "datagram":
                    self.datagram(data)
                else:
                    self.stream(out, [data], fin=True)

    def warm(self, mode: str = "auto") -> JobDone:
        """serve=False: a first exchange (warm-up included) answered by hand."""
        return self.answer(self.client.start_exchange(self.now(), mode))

    def built_reply(self, out: Outgoing, policy: ServerPolicy) -> bytes:
        """The answer `policy` would build for `out` (Precision padding, signature, metadata),
        with the stamps `reply()` would choose."""
        sent = self.t1.get(out.key, self.raw) + UTC_MINUS_RAW
        elapsed = self.utc - sent
        builder = policy.builder(wire.decode_request(out.data), unix_ns_to_ntp64(sent + elapsed // 4),
                                 len(out.data))
        return stamp_t3(builder, sent + elapsed * 3 // 4)

    def reply(self, out: Outgoing, *, t2: Optional[int] = None, t3: Optional[int] = None,
              nonce: Optional[bytes] = None, metadata: Tuple[Tuple[str, str], ...] = (),
              precision: bool = False, padding: int = 0, signer: Optional[wire.Signer] = None,
              signature: Optional[wire.SignatureBlock] = None) -> bytes:
        """Hand-made response bytes to `out`, T2/T3 in unix ns. By default the server's clock is
        right and the path symmetric: T2 and T3 at 1/4 and 3/4 of the time since T1."""
        sent = self.t1.get(out.key, self.raw) + UTC_MINUS_RAW
        elapsed = self.utc - sent
        t2 = sent + elapsed // 4 if t2 is None else t2
        t3 = sent + elapsed * 3 // 4 if t3 is None else t3
        resp = wire.Response(nonce=request_nonce(out) if nonce is None else nonce,
                             receive_ts=unix_ns_to_ntp64(t2), send_ts=unix_ns_to_ntp64(t3),
                             precision=precision, metadata=metadata, padding=padding, signature=signature)
        return wire.encode_response(resp, signer)


@pytest.fixture
def make_link() -> Callable[..., Link]:
    """`make_link(options, policy, **network)`: a connected Link (see the module docstring)."""
    return Link


@pytest.fixture
def kit() -> SimpleNamespace:
    """The constants and helpers of this file, for the test modules."""
    return SimpleNamespace(UTC_MINUS_RAW=UTC_MINUS_RAW, ntp_round=ntp_round, request_nonce=request_nonce,
                           format_xleave=format_xleave)
