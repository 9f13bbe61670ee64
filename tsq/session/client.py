"""The client side of the TSQ protocol, sans-IO: one QUIC connection's exchanges, as a state machine.

Driven like aioquic's `QuicConnection`: the I/O edge (tsq/quic/client.py) tells the session what
happened — handshake done (ALPN, DATAGRAM support), a message left (T1), a datagram or stream bytes
arrived (with T4, the packet's RX stamp), a kernel TX stamp arrived, time passed — and takes what the
session wants sent (`take_outgoing()`), when it next needs the clock (`next_deadline()`), and its
events (`next_event()`). Every time is an argument: raw ns (CLOCK_MONOTONIC_RAW) for local stamps and
deadlines, plus the realtime clock read at the same instant (`Instant`) where a timestamp's NTP era
or the draft §6.6 offset check needs one.

The session owns, per connection: nonces, mode choice and the §6.5 fallback from unanswered
datagrams to streams, the warm-up exchange after each handshake, retry after a loss, interleaved
refinement (the precise T3 the server reports for the previous exchange, paired by nonce only with
its own exchange), the paired "warm partner" exchange, RTT-based answer deadlines, stall detection,
stream framing (tsq.session.framing) and the §6.6 checks. Operations are jobs:
`start_exchange()` (one validated exchange), `start_sample()` (the best sample the server can give
now: what `tsq sync` polls) and `start_raw()` (arbitrary bytes, for tests); each ends with one
`JobDone` event. Jobs are generators that yield the requests they need; the session resumes them
with the answer or throws the failure into them, so the policy reads as the sequence it is.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Generator, List, Optional, Tuple, Union

from tsq import wire
from tsq.auth import Verifier
from tsq.ntp import ntp64_to_unix_ns
from tsq.session.alpn import ALPN_LEGACY, offered
from tsq.session.errors import (
    TsqError,
    TsqHandshakeError,
    TsqInvalidResponse,
    TsqModeUnavailable,
    TsqServerError,
    TsqTimeout,
    TsqUnreachable,
)
from tsq.session.framing import MAX_RESPONSE_BYTES, Expectation, response_complete
from tsq.session.xleave import (
    XLEAVE_REQUEST_KEY,
    XLEAVE_RESPONSE_KEY,
    find_xleave,
    format_xleave,
    parse_xleave,
)
from tsq.sync.exchange import Exchange, SampleRejected, check

NS_PER_S = 1_000_000_000
MODES = ("auto", "datagram", "stream")
# An answer is given up on after RESPONSE_TIMEOUT_RTTS x the slowest recent round trip (at least
# MIN_RESPONSE_TIMEOUT, at most the client's timeout): a lost datagram then costs one poll, as in
# NTP, not a poll plus a second of waiting.
RESPONSE_TIMEOUT_RTTS = 8
MIN_RESPONSE_TIMEOUT_NS = 250_000_000
# A datagram connection counts as stalled (dropped and re-opened) after this many timeouts in a row
# *and* this long without any packet from the server: random loss of 20 % each way is normal and
# must not cost a new handshake; a server that vanished silently must.
STALL_TIMEOUTS = 3
STALL_SILENCE_NS = 8 * NS_PER_S
# Draft §6.5 "clients MUST be prepared to retry using stream-based transport": in auto mode, this
# many datagram exchanges in a row unanswered while the server is otherwise heard from (its QUIC
# ACKs keep coming), with no datagram answer ever on the connection, switch it to streams.
DATAGRAM_FALLBACK_TIMEOUTS = 2
SAMPLE_ATTEMPTS = 3


@dataclass(frozen=True)
class Instant:
    """One reading of the local clocks: raw ns (for stamps and deadlines) and realtime ns (eras)."""

    raw_ns: int
    real_ns: int


@dataclass(frozen=True)
class ClientOptions:
    name: str
    precision: bool = True
    interleaved: bool = True
    paired: bool = False
    require_signature: bool = False
    verifier: Optional[Verifier] = None
    metadata_query: bool = True
    allow_legacy: bool = False          # accept ALPN `tsq/1` (draft §7 wants exactly `tsq`)
    timeout_ns: int = NS_PER_S          # the longest wait for one answer
    precision_size: Optional[int] = None   # pad Precision requests to this size (None: learn it)
    max_offset_ns: int = 86_400 * NS_PER_S

    def alpns(self) -> List[str]:
        return offered(self.allow_legacy)


# ------------------------------------------------------------------------------------- output
@dataclass(frozen=True)
class Outgoing:
    """A TSQ message to send: on a new stream (FIN after it) or as one DATAGRAM frame."""

    key: int
    mode: str                 # "datagram" | "stream"
    data: bytes
    needle: bytes             # a unique prefix, to find the packet that carries it (T1)


@dataclass(frozen=True)
class StopReading:
    """Stop the stream of request `key` (STOP_SENDING): its response is oversized."""

    key: int


@dataclass(frozen=True)
class JobDone:
    job: int
    exchange: Optional[Exchange] = None
    error: Optional[TsqError] = None
    payload: Optional[bytes] = None     # start_raw: the answer's bytes (None: none came)
    interleaved: bool = False           # the exchange's T3 is the server's reported TX time


@dataclass(frozen=True)
class Discarded:
    """A response that never became a sample, and why (draft §6.6: logged, counted)."""

    reason: str


@dataclass(frozen=True)
class ModeFallback:
    """Datagrams went unanswered: this connection now uses streams (draft §6.5)."""

    reason: str


@dataclass(frozen=True)
class Stalled:
    """The connection looks dead: the edge should drop it (the next job reconnects)."""

    reason: str


Event = Union[JobDone, Discarded, ModeFallback, Stalled]
Out = Union[Outgoing, StopReading]


# ------------------------------------------------------------------------------------- internals
@dataclass(frozen=True)
class _Ask:
    """What a job yields: send one request (`raw`: these exact bytes) and resume me with the answer."""

    mode: str
    purpose: str                         # "warmup" | "measure" | "partner" | "raw"
    raw: Optional[bytes] = None


@dataclass
class _Answer:
    exchange: Optional[Exchange]         # None for raw requests
    payload: bytes
    refined: Optional[Exchange] = None   # the previous exchange completed by this answer's report


@dataclass
class _Pending:
    key: int
    job: int
    nonce: bytes
    mode: str
    purpose: str
    expect: Expectation
    auto: bool = False                   # the mode was chosen by the session ("auto"), not the caller
    sent_raw: Optional[int] = None       # user-space T1 (raw ns read right before the send)
    t1_kernel: Optional[int] = None      # kernel TX stamp, raw ns
    deadline: Optional[int] = None
    buffer: bytearray = field(default_factory=bytearray)
    last_rx_raw: int = 0                 # T4 candidate: the packet that carried the last byte
    last_rx_kernel: bool = False
    dirty: bool = False
    fin: bool = False


JobGen = Generator[_Ask, _Answer, Tuple[Optional[Exchange], bool, Optional[bytes]]]


class ClientSession:
    """One QUIC connection's TSQ client protocol state."""

    def __init__(self, options: ClientOptions, offer_datagrams: bool = True,
                 nonce_source: Callable[[int], bytes] = os.urandom) -> None:
        self.options = options
        self.name = options.name
        self._offer_datagrams = offer_datagrams
        self._nonce = nonce_source
        self.alpn: Optional[str] = None
        self.datagrams_ok = False
        self.handshake_done = False
        self.dead: Optional[TsqError] = None
        self.warmed_up = False
        self._keys = 0
        self._jobs: Dict[int, JobGen] = {}
        self._job_ids = 0
        self._pending: Dict[int, _Pending] = {}
        self._by_nonce: Dict[bytes, _Pending] = {}
        self._outgoing: List[Out] = []
        self._events: Deque[Event] = collections.deque()
        self.timeouts_in_a_row = 0
        self.last_rx_raw: Optional[int] = None
        self.round_trips: List[int] = []        # recent answered exchanges, ns
        self.previous: Optional[Tuple[bytes, Exchange]] = None   # last basic exchange, awaiting refinement
        self.xleave_seen = False
        self.datagram_answers = 0
        self.datagram_unanswered = 0
        self.datagrams_fell_back = False
        self.discarded_responses = 0
        self.last_response: Optional[wire.Response] = None
        self.last_interleaved: Optional[Exchange] = None
        self._now = Instant(0, 0)              # the latest instant any input carried
        self._delivered_nonce = b""            # the last exchange returned in its basic form

    # -------------------------------------------------------------------------- connection
    def handshake_completed(self, now: Instant, alpn: Optional[str], peer_datagrams: bool,
                            handshake_ns: Optional[int] = None) -> None:
        """The handshake finished (the edge checked the certificate/pin). Raises TsqHandshakeError
        when the ALPN is not acceptable; the edge then closes the connection. `handshake_ns`, the
        time the handshake took (about one round trip plus the server's work), seeds the answer
        deadline before the first exchange has measured a round trip."""
        if alpn not in self.options.alpns():
            raise TsqHandshakeError(f"{self.name}: server negotiated ALPN {alpn!r}, not 'tsq'"
                                    + (" (tsq/1 needs --allow-legacy-alpn)" if alpn == ALPN_LEGACY else ""))
        if alpn == ALPN_LEGACY and self.options.require_signature:
            raise TsqHandshakeError(f"{self.name}: server speaks only tsq/1, which cannot carry the "
                                    "signatures this client requires")
        self.alpn = alpn
        self.handshake_done = True
        if handshake_ns is not None and handshake_ns > 0 and not self.round_trips:
            self.round_trips = [handshake_ns]
        self.last_rx_raw = now.raw_ns
        self.datagrams_ok = bool(self._offer_datagrams and alpn != ALPN_LEGACY and peer_datagrams)

    def packet_received(self, now_raw: int) -> None:
        """Any packet from the server (ACKs too): it is alive."""
        self.last_rx_raw = now_raw

    def connection_lost(self, error: TsqError) -> None:
        """The connection is gone: every pending request fails with `error`."""
        if self.dead is None:
            self.dead = error
        for p in list(self._pending.values()):
            self._fail_request(p, error)

    @property
    def connected(self) -> bool:
        return self.handshake_done and self.dead is None

    # -------------------------------------------------------------------------- jobs
    def start_exchange(self, now: Instant, mode: str = "auto") -> int:
        """One validated exchange (a warm-up first after the handshake). Raises ValueError /
        TsqModeUnavailable at once for a mode that cannot be used."""
        self._choose_mode(mode)
        return self._start(now, self._exchange_job(mode))

    def start_sample(self, now: Instant, mode: str = "auto") -> int:
        """The best sample this server can give now (see `_sample_job`)."""
        self._choose_mode(mode)
        return self._start(now, self._sample_job(mode))

    def start_raw(self, now: Instant, data: bytes, mode: str = "stream") -> int:
        """Send `data` as one TSQ message; the JobDone carries the answer's bytes (streams) or None."""
        self._choose_mode(mode)
        return self._start(now, self._raw_job(mode, bytes(data)))

    def _start(self, now: Instant, gen: JobGen) -> int:
        self._job_ids += 1
        job = self._job_ids
        self._jobs[job] = gen
        self._step(job, now, lambda: next(gen))
        return job

    def _exchange_job(self, mode: str) -> JobGen:
        if not self.warmed_up:
            self.warmed_up = True
            with contextlib.suppress(TsqTimeout, TsqInvalidResponse):
                # Biased by the handshake: never a sample in its basic form (with interleaving the
                # next answer's report may still complete it with its precise T3).
                yield _Ask(mode, "warmup")
        answer = yield _Ask(mode, "measure")
        return answer.exchange, False, None

    def _sample_job(self, mode: str) -> JobGen:
        """With interleaving (a server that reports the kernel TX time of its previous response),
        the sample is the previous exchange completed with the precise T3; an extra exchange is made
        when the previous one is missing (first call, loss). Each exchange is returned at most once.
        A timed-out exchange is retried at once (SAMPLE_ATTEMPTS exchanges in all) on a live
        connection. With `paired`, each call makes two exchanges back to back and the sample is the
        second of the previous call's pair: it left a warm send path (right after a receive), like
        the server's answer, instead of a path gone cold while the client idled."""
        opts = self.options
        ex: Optional[Exchange] = None
        lost: Optional[TsqTimeout] = None
        for _ in range(SAMPLE_ATTEMPTS):
            self.last_interleaved = None
            try:
                ex = (yield from self._exchange_job(mode))[0]
            except TsqTimeout as exc:
                # One lost datagram should cost one timeout, not the whole poll interval: try again
                # at once, unless the connection itself gave up.
                if not self.connected:
                    raise
                lost = exc
                continue
            except TsqInvalidResponse:
                if self.last_interleaved is None:
                    raise
            refined = self.last_interleaved
            if opts.paired and opts.interleaved and self.xleave_seen:
                with contextlib.suppress(TsqTimeout, TsqInvalidResponse):
                    yield _Ask(mode, "partner")   # the warm partner, refined by the next call
            if refined is not None:
                return refined, True, None
            if ex is not None and (not opts.interleaved or not self.xleave_seen):
                return self._deliver_basic(ex), False, None
        if ex is None:
            raise lost if lost is not None else TsqInvalidResponse(f"{self.name}: no valid sample")
        return self._deliver_basic(ex), False, None

    def _deliver_basic(self, ex: Exchange) -> Exchange:
        """An exchange goes out as a sample in its basic form: it must not come back refined."""
        if self.previous is not None and self.previous[1] is ex:
            self._delivered_nonce = self.previous[0]
        return ex

    def _raw_job(self, mode: str, data: bytes) -> JobGen:
        if self._choose_mode(mode) == "datagram":
            yield _Ask(mode, "fire", raw=data)   # no answer is awaited (any would be discarded)
            return None, False, None
        try:
            answer = yield _Ask(mode, "raw", raw=data)
        except TsqError:
            return None, False, None
        return None, False, answer.payload

    def _step(self, job: int, now: Instant, resume: Callable[[], _Ask]) -> None:
        """Run a job until it asks for a request (sent) or ends (JobDone)."""
        while True:
            try:
                ask = resume()
            except StopIteration as stop:
                self._jobs.pop(job, None)
                ex, interleaved, payload = stop.value
                self._events.append(JobDone(job, exchange=ex, payload=payload, interleaved=interleaved))
                return
            except TsqError as exc:
                self._jobs.pop(job, None)
                self._events.append(JobDone(job, error=exc))
                return
            gen = self._jobs[job]
            try:
                immediate = self._send(job, now, ask)
            except TsqError as exc:
                resume = _thrower(gen, exc)
                continue
            if immediate is None:
                return
            resume = _sender(gen, immediate)

    def _resume(self, p: _Pending, now: Instant, answer: Optional[_Answer],
                error: Optional[TsqError]) -> None:
        # A job waits on at most one request and only ends while running (in `_step`), so the job
        # of a pending request is always there.
        gen = self._jobs[p.job]
        if error is not None:
            self._step(p.job, now, _thrower(gen, error))
        else:
            assert answer is not None
            self._step(p.job, now, _sender(gen, answer))

    # -------------------------------------------------------------------------- sending
    def _choose_mode(self, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "datagram" and self.handshake_done and not self.datagrams_ok:
            raise TsqModeUnavailable(f"{self.name}: server did not enable QUIC DATAGRAM frames")
        if mode == "auto":
            return "datagram" if self.datagrams_ok and not self.datagrams_fell_back else "stream"
        return mode

    def request_bytes(self, nonce: bytes) -> Tuple[bytes, Expectation]:
        """The request this client sends for `nonce`, and what its complete response must hold."""
        opts = self.options
        if self.alpn == ALPN_LEGACY:
            return wire.encode_request(wire.Request(nonce=nonce)), Expectation()
        meta: Tuple[Tuple[str, str], ...] = ((XLEAVE_REQUEST_KEY, "1"),) if opts.interleaved else ()
        req = wire.Request(nonce=nonce, precision=opts.precision, signature_request=opts.require_signature,
                           metadata_query=opts.metadata_query, metadata=meta)
        if opts.precision:
            # Pad to the length the response will have, not to a fixed 256 B (the server can pad
            # its response up to the request's length, never down): what the last response on this
            # connection was without its padding, plus the interleaved report when that one had
            # none (the first answer after a handshake never has one)... Before any response: the
            # smallest response that can acknowledge Precision Mode, plus that report. A guess
            # that is short costs one unacknowledged exchange (the warm-up), then it is exact.
            last = self.last_response or wire.Response(
                nonce=bytes(wire.NONCE_SIZE), receive_ts=0, send_ts=0, precision=True)
            metadata = last.metadata
            # ... unless a second answer came without one: then this server does not report.
            if opts.interleaved and find_xleave(metadata) is None and len(self.round_trips) < 2:
                metadata = (*metadata, (XLEAVE_RESPONSE_KEY, format_xleave(bytes(wire.NONCE_SIZE), 0)))
            expected = wire.encode_response(dataclasses.replace(last, precision=True, metadata=metadata,
                                                                padding=0))
            unpadded = len(wire.encode_request(req))
            target = max(unpadded, opts.precision_size or len(expected))
            if target - unpadded == 1:  # no 1-byte Padding TLV: two bytes more on both sides
                target += 2
            req = wire.pad_request(req, target)
        data = wire.encode_request(req)
        return data, Expectation(len(data), opts.precision, opts.require_signature)

    def _send(self, job: int, now: Instant, ask: _Ask) -> Optional[_Answer]:
        """Queue the request a job asked for; an answer at once only for fire-and-forget."""
        self._now = now
        if self.dead is not None:
            raise self.dead
        mode = self._choose_mode(ask.mode)
        self._keys += 1
        key = self._keys
        if ask.raw is not None:
            data, expect, nonce = ask.raw, Expectation(), b""
        else:
            nonce = self._nonce(wire.NONCE_SIZE)
            data, expect = self.request_bytes(nonce)
        needle = data[:2 + wire.NONCE_SIZE]
        if ask.purpose == "fire":
            self._outgoing.append(Outgoing(key, mode, data, needle))
            return _Answer(None, b"")
        p = _Pending(key, job, nonce, mode, ask.purpose, expect, auto=ask.mode == "auto")
        p.deadline = now.raw_ns + self.response_timeout_ns()
        self._pending[key] = p
        if mode == "datagram" and nonce:
            self._by_nonce[nonce] = p
        self._outgoing.append(Outgoing(key, mode, data, needle))
        return None

    def take_outgoing(self) -> List[Out]:
        """What to send now (in order); the edge reports each message's departure with `sent()`."""
        out, self._outgoing = self._outgoing, []
        return out

    def sent(self, key: int, t1_raw: Optional[int]) -> None:
        """Message `key` left; `t1_raw` is the raw time read right before its datagram was sent."""
        p = self._pending.get(key)
        if p is not None and t1_raw is not None:
            p.sent_raw = t1_raw

    def tx_stamp(self, key: int, t1_raw: int) -> None:
        """The kernel's TX stamp of the datagram that carried message `key` (raw ns)."""
        p = self._pending.get(key)
        if p is not None:
            p.t1_kernel = t1_raw

    def response_timeout_ns(self) -> int:
        """How long to wait for an answer (see RESPONSE_TIMEOUT_RTTS)."""
        cap = self.options.timeout_ns
        if not self.round_trips:
            return cap
        return min(cap, max(MIN_RESPONSE_TIMEOUT_NS, RESPONSE_TIMEOUT_RTTS * max(self.round_trips)))

    # -------------------------------------------------------------------------- receiving
    def datagram_received(self, now: Instant, data: bytes, rx_raw: int, kernel: bool) -> None:
        """A DATAGRAM frame's payload, with the RX stamp of its packet (T4)."""
        self._now = now
        nonce = data[2:18] if len(data) >= 18 and data[0] == wire.NONCE and data[1] == 16 else b""
        p = self._by_nonce.pop(nonce, None)
        if p is None or p.key not in self._pending:
            # Draft §6.6: a response whose nonce matches no outstanding request is discarded.
            self._discard(f"{self.name}: datagram response with an unknown nonce discarded (§6.6)")
            return
        self._complete(p, now, bytes(data), rx_raw, kernel)

    def stream_data(self, key: int, data: bytes, end_stream: bool, rx_raw: int, kernel: bool) -> None:
        """Bytes of the response stream of request `key`; completion is checked in packet_done()."""
        p = self._pending.get(key)
        if p is None or p.mode != "stream":
            return
        if data:
            p.buffer += data
            p.last_rx_raw, p.last_rx_kernel = rx_raw, kernel
            p.dirty = True
        if end_stream:
            p.fin = p.dirty = True

    def stream_reset(self, now: Instant, key: int) -> None:
        p = self._pending.get(key)
        if p is not None:
            self._fail_request(p, TsqInvalidResponse(f"{self.name}: the server reset the stream"), now)

    def packet_done(self, now: Instant) -> None:
        """End of one received packet: complete every stream response it completed. T4 is the RX
        stamp of the packet that carried the response's last byte; a FIN that comes later changes
        nothing (docs/wire.md "Stream framing")."""
        self._now = now
        for p in [p for p in self._pending.values() if p.dirty]:
            p.dirty = False
            if len(p.buffer) > MAX_RESPONSE_BYTES:
                self._outgoing.append(StopReading(p.key))
                error = TsqInvalidResponse(
                    f"{self.name}: stream response exceeds {MAX_RESPONSE_BYTES} bytes: refused")
                self._discard(str(error))
                self._fail_request(p, error, now)
                continue
            data = bytes(p.buffer)
            if p.purpose == "raw":
                if p.fin:
                    self._complete(p, now, data, p.last_rx_raw, p.last_rx_kernel)
                continue
            if p.fin or response_complete(data, p.expect):
                self._complete(p, now, data, p.last_rx_raw, p.last_rx_kernel)

    def _complete(self, p: _Pending, now: Instant, payload: bytes, t4_raw: int, kernel_t4: bool) -> None:
        del self._pending[p.key]
        self._by_nonce.pop(p.nonce, None)
        self.timeouts_in_a_row = 0
        if p.mode == "datagram":
            self.datagram_answers += 1
            self.datagram_unanswered = 0
        if p.sent_raw is not None:
            self.round_trips = [*self.round_trips[-7:], max(0, now.raw_ns - p.sent_raw)]
        if p.purpose == "raw":
            self._resume(p, now, _Answer(None, payload), None)
            return
        try:
            answer = self._validate(p, now, payload, t4_raw, kernel_t4)
        except TsqError as exc:
            self._discard(str(exc))
            self._resume(p, now, None, exc)
            return
        self._resume(p, now, answer, None)

    def _discard(self, reason: str) -> None:
        self.discarded_responses += 1
        self._events.append(Discarded(reason))

    # -------------------------------------------------------------------------- validation
    def _validate(self, p: _Pending, now: Instant, payload: bytes, t4_raw: int, kernel_t4: bool) -> _Answer:
        try:
            resp = wire.decode_response(payload)
        except wire.WireError as exc:
            raise TsqInvalidResponse(f"{self.name}: malformed response: {exc}") from exc
        if isinstance(resp, wire.ErrorResponse):
            raise TsqServerError(resp.code, resp.reason, self.name)
        if resp.nonce != p.nonce:
            raise TsqInvalidResponse(f"{self.name}: response nonce does not match the request (§6.6)")
        self._check_signature(resp)
        pivot = now.real_ns
        if p.t1_kernel is not None:
            t1_raw = p.t1_kernel
        elif p.sent_raw is not None:
            t1_raw = p.sent_raw
        else:
            raise TsqInvalidResponse(f"{self.name}: answer before the request was sent")
        ex = Exchange(
            server=self.name, mode=p.mode, t1_raw=t1_raw,
            t2_unix=ntp64_to_unix_ns(resp.receive_ts, pivot), t3_unix=ntp64_to_unix_ns(resp.send_ts, pivot),
            t4_raw=t4_raw, kernel_t1=p.t1_kernel is not None, kernel_t4=kernel_t4,
            clock_quality=resp.clock_quality, time_source=resp.time_source, metadata=resp.metadata,
        )
        self.last_response = resp
        try:
            check(ex, raw_to_unix_ns=now.real_ns - now.raw_ns, max_offset_ns=self.options.max_offset_ns)
        except SampleRejected as exc:
            if self._only_the_basic_t3_is_late(ex, now):
                # The basic T3 is an estimate stamped before the packet left (plus the measured
                # stamp-to-wire minimum): on a µs round trip it can land after the real departure and
                # make the round trip non-positive. Not a sample — but the kernel-stamped T3 this
                # answer reports for the previous exchange is sound, and this exchange's own T3 may
                # still be completed by the next report (docs/wire.md "Interleaved T3").
                self._interleave(resp, p.nonce, ex, now)
            else:
                # Draft §6.6: nothing else of an invalid response is used — not its report of the
                # previous exchange's T3, and it cannot itself be refined later.
                self.previous = None
                self.last_interleaved = None
            raise TsqInvalidResponse(f"{self.name}: {exc} (§6.6)") from exc
        refined = self._interleave(resp, p.nonce, ex, now)
        return _Answer(ex, payload, refined)

    def _only_the_basic_t3_is_late(self, ex: Exchange, now: Instant) -> bool:
        """Whether the exchange passes §6.6 with any T3 in [T2, T2 + T4 - T1): only its basic T3
        put the round trip at or below zero (T1 < T4, T2 sane, offset within the threshold)."""
        if not self.options.interleaved or ex.t4_raw <= ex.t1_raw or ex.t3_unix < ex.t2_unix:
            return False
        try:
            check(dataclasses.replace(ex, t3_unix=ex.t2_unix), raw_to_unix_ns=now.real_ns - now.raw_ns,
                  max_offset_ns=self.options.max_offset_ns)
        except SampleRejected:
            return False
        return True

    def _check_signature(self, resp: wire.Response) -> None:
        opts = self.options
        if resp.signature is None:
            if opts.require_signature:
                raise TsqInvalidResponse(f"{self.name}: signature requested but the response is unsigned")
            return
        if opts.verifier is None:
            if opts.require_signature:
                raise TsqInvalidResponse(f"{self.name}: no key to verify the signature with")
            return
        if not opts.verifier.verify(resp.signature, resp.signed_data):
            raise TsqInvalidResponse(
                f"{self.name}: signature verification failed (key id {resp.signature.key_id})")

    def _interleave(self, resp: wire.Response, nonce: bytes, ex: Exchange,
                    now: Instant) -> Optional[Exchange]:
        self.last_interleaved = None
        previous = self.previous
        self.previous = (nonce, ex)
        value = find_xleave(resp.metadata)
        if value is None:
            return None
        self.xleave_seen = True
        if previous is None or previous[1].mode != ex.mode or previous[0] == self._delivered_nonce:
            return None
        t3 = parse_xleave(value, previous[0], now.real_ns)
        if t3 is None:
            return None
        old = previous[1]
        refined = Exchange(
            server=old.server, mode=old.mode, t1_raw=old.t1_raw, t2_unix=old.t2_unix, t3_unix=t3,
            t4_raw=old.t4_raw, kernel_t1=old.kernel_t1, kernel_t4=old.kernel_t4,
            clock_quality=old.clock_quality, time_source=old.time_source, metadata=old.metadata,
        )
        try:
            check(refined, raw_to_unix_ns=now.real_ns - now.raw_ns, max_offset_ns=self.options.max_offset_ns)
        except SampleRejected:
            return None
        self.last_interleaved = refined
        return refined

    # -------------------------------------------------------------------------- time
    def next_deadline(self) -> Optional[int]:
        """The raw ns at which `handle_timer` must run next (None: nothing pending)."""
        deadlines = [p.deadline for p in self._pending.values() if p.deadline is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: Instant) -> None:
        """Expire requests whose answer is overdue."""
        self._now = now
        for p in [p for p in self._pending.values() if p.deadline is not None and p.deadline <= now.raw_ns]:
            if p.key not in self._pending:
                continue
            self._timed_out(p, now)

    def _timed_out(self, p: _Pending, now: Instant) -> None:
        self.timeouts_in_a_row += 1
        silent = now.raw_ns - (self.last_rx_raw if self.last_rx_raw is not None else now.raw_ns)
        discarded = f"; {self.discarded_responses} response(s) discarded" if self.discarded_responses else ""
        waited = ((p.deadline or 0) - (p.sent_raw if p.sent_raw is not None else now.raw_ns)) / NS_PER_S
        timeout = TsqTimeout(f"{self.name}: no {p.mode} response within {max(waited, 0.0):.3g} s{discarded}")
        if p.mode == "datagram" and p.auto:
            self.datagram_unanswered += 1
            if (self.datagram_answers == 0 and self.datagram_unanswered >= DATAGRAM_FALLBACK_TIMEOUTS
                    and silent < STALL_SILENCE_NS and not self.datagrams_fell_back):
                self.datagrams_fell_back = True
                self._events.append(ModeFallback(
                    f"{self.name}: {self.datagram_unanswered} datagram requests unanswered while the "
                    "server is reachable: using streams (draft §6.5)"))
        if p.mode == "stream" or (self.timeouts_in_a_row >= STALL_TIMEOUTS and silent >= STALL_SILENCE_NS):
            # Dead first, so the job this timeout resumes gives up instead of retrying on it.
            stall = TsqTimeout(f"{self.name}: connection stalled")
            self.dead = stall
            self._events.append(Stalled(str(stall)))
            self._fail_request(p, timeout, now)
            self.connection_lost(stall)
            return
        self._fail_request(p, timeout, now)

    def _fail_request(self, p: _Pending, error: TsqError, now: Optional[Instant] = None) -> None:
        self._pending.pop(p.key, None)
        self._by_nonce.pop(p.nonce, None)
        self._resume(p, now or self._now, None, error)

    # -------------------------------------------------------------------------- events
    def next_event(self) -> Optional[Event]:
        return self._events.popleft() if self._events else None

    def pending_keys(self) -> List[int]:
        return list(self._pending)


def _thrower(gen: JobGen, exc: TsqError) -> Callable[[], _Ask]:
    return lambda: gen.throw(exc)


def _sender(gen: JobGen, answer: _Answer) -> Callable[[], _Ask]:
    return lambda: gen.send(answer)


__all__ = [
    "ClientOptions",
    "ClientSession",
    "Discarded",
    "Event",
    "Instant",
    "JobDone",
    "ModeFallback",
    "Outgoing",
    "Stalled",
    "StopReading",
    "TsqError",
    "TsqUnreachable",
]
