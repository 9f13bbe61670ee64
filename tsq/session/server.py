"""The server side of the TSQ protocol, sans-IO: requests and their T2 in, response plans out.

One `ServerSession` per QUIC connection, driven like aioquic's `QuicConnection`: the I/O edge
(tsq/quic/server.py) hands it stream bytes and datagram payloads with the served-clock time of the
packet that carried them (T2) and the current monotonic time; it returns `Action`s — answer with
this `ResponseBuilder` (T3 still to be stamped, and whether it may be stamped late in the packet),
send this Error TLV, stop this stream — and keeps the per-connection protocol state (ALPN, stream
assembly, the interleaved-T3 report). Server-wide policy (`ServerPolicy`), rate limits
(`RateLimiter`), statistics (`ServerStats`) and the stamp-to-wire residual (`StampResidual`) are
shared by every session of a server. Nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple, Union

from tsq import wire
from tsq.ntp import unix_ns_to_ntp64
from tsq.session.alpn import ALPN_LEGACY, offered
from tsq.session.framing import MAX_REQUEST_BYTES, request_complete
from tsq.session.xleave import XLEAVE_REQUEST_KEY, XLEAVE_RESPONSE_KEY, format_xleave

ERR_RATE_LIMITED = 4        # beyond the draft's 1-3; clients treat any Error TLV as a failed exchange
QUIC_APP_REFUSED = 0x178    # CONNECTION_CLOSE / STOP_SENDING code for "not a TSQ peer / abuse"

# (signed, datagram): each path from stamp to wire has its own minimum residual.
StampPath = Tuple[bool, bool]


@dataclass(frozen=True)
class ServerPolicy:
    """How a server answers (the request-policy half of `ServerConfig`)."""

    signer: Optional[wire.Signer] = None
    metadata: Tuple[Tuple[str, str], ...] = ()
    time_source: Optional[wire.TimeSourceInfo] = None
    clock_quality: Optional[wire.ClockQuality] = None
    precision: bool = True
    legacy_alpn: bool = False
    late_stamps: bool = True          # T3 may be re-stamped in the packet (kernel-stamping servers)
    compensate: bool = True           # add the measured stamp-to-wire residual to T3

    def alpns(self) -> List[str]:
        return offered(self.legacy_alpn)

    def check(self) -> None:
        """Raise WireError when the configured TLVs cannot be encoded (checked once, at start-up,
        so a bad option is the operator's error message, not every client's "malformed request")."""
        probe = wire.Request(nonce=bytes(wire.NONCE_SIZE), precision=True, metadata_query=True,
                             signature_request=self.signer is not None)
        self.builder(probe, 0, 512, ((XLEAVE_RESPONSE_KEY, format_xleave(bytes(16), 0)),)).finish()

    def builder(self, req: wire.Request, t2_ntp: int, request_size: int,
                extra_metadata: Tuple[Tuple[str, str], ...] = ()) -> wire.ResponseBuilder:
        metadata = (self.metadata if req.metadata_query else ()) + extra_metadata
        precision = req.precision and self.precision
        if req.precision and not precision:
            req = wire.Request(nonce=req.nonce, signature_request=req.signature_request,
                               metadata_query=req.metadata_query, metadata=req.metadata)
        return wire.ResponseBuilder(
            req, t2_ntp, clock_quality=self.clock_quality, time_source=self.time_source,
            metadata=metadata, signer=self.signer if req.signature_request else None,
            pad_to=request_size if precision else None)


@dataclass
class ServerStats:
    """Counters since start. Peers: `retries_sent` Initials answered with a Retry (address not yet
    validated), `validated` Initials with a valid token that decrypted, `tokens_invalid` Initials
    whose token was bad, expired or for another address, `unvalidated_dropped` datagrams that
    created nothing (too small for an Initial, undecryptable, for no known connection),
    `connections_refused` validated peers over a limit (told CONNECTION_REFUSED at once),
    `closed_by_error` connections aioquic closed for a protocol error (flow control, stream limit).
    `fast_received` / `fast_answers`: packets read and answers sent by the DATAGRAM fast path
    (tsq.quic.fast_exchange) instead of aioquic's generic path."""

    connections_opened: int = 0
    connections_refused: int = 0
    retries_sent: int = 0
    validated: int = 0
    tokens_invalid: int = 0
    unvalidated_dropped: int = 0
    closed_by_error: int = 0
    requests_datagram: int = 0
    requests_stream: int = 0
    errors_sent: int = 0
    dropped: int = 0
    rate_limited: int = 0
    oversized: int = 0
    handler_failures: int = 0
    fast_received: int = 0
    fast_answers: int = 0

    def snapshot(self) -> Dict[str, int]:
        return dict(self.__dict__)


class _Bucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.tokens = burst
        self.stamp = now
        self.rate = rate
        self.burst = burst

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """A token bucket per source address, in bounded memory (forgetting a bucket only forgives)."""

    def __init__(self, rate: float, burst: float, max_sources: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: Dict[str, _Bucket] = {}

    def allow(self, source: str, now_s: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.clear()
            bucket = self._buckets[source] = _Bucket(self.rate, self.burst, now_s)
        return bucket.take(now_s)


class StampResidual:
    """The minimum of the last `size` stamp-to-wire residuals (kernel TX time minus T3 as stamped)."""

    def __init__(self, size: int = 63, warm: int = 16) -> None:
        self._values: Deque[int] = collections.deque(maxlen=size)
        self._warm = warm
        self.margin_ns = 2_000  # the minimum of 63 is not the minimum of the next one
        self.estimate_ns = 0
        self._min = 0

    def add(self, residual_ns: int) -> None:
        if not 0 <= residual_ns < 10_000_000:  # a descheduled sender is not the stamp-to-wire path
            return
        values = self._values
        evicted = values[0] if len(values) == values.maxlen else None
        values.append(residual_ns)
        # The minimum, not the median: T3 must not land after the real departure, or short
        # loopback round trips come out negative (draft §6.6 rejects those). What is left is
        # one-sided (T3 early by residual - minimum); the interleaved report removes it.
        # A full rescan only when the minimum itself left the window; otherwise one comparison.
        if evicted is None or evicted <= self._min:
            self._min = min(values)
        else:
            self._min = min(self._min, residual_ns)
        if len(values) >= self._warm:  # early samples are slow (cold code): wait
            self.estimate_ns = max(0, self._min - self.margin_ns)


def stamp_paths() -> Dict[StampPath, StampResidual]:
    return {(sg, dg): StampResidual() for sg in (False, True) for dg in (False, True)}


# ------------------------------------------------------------------------------------------ actions
@dataclass(frozen=True)
class Answer:
    """Send `builder`'s response (on `stream_id`, or as a DATAGRAM frame when None) after stamping T3.

    `late`: T3 may be re-stamped into the packet right before encryption (unsigned responses of a
    kernel-stamping server). `compensation_ns` is added to every T3 stamp (the path's residual).
    """

    stream_id: Optional[int]
    builder: wire.ResponseBuilder
    nonce: bytes
    path: StampPath
    late: bool
    compensation_ns: int


@dataclass(frozen=True)
class SendError:
    """Send an Error TLV (and FIN) on a stream."""

    stream_id: int
    payload: bytes


@dataclass(frozen=True)
class StopStream:
    """Refuse the rest of a stream: STOP_SENDING and RESET_STREAM with `error_code`."""

    stream_id: int
    error_code: int


@dataclass(frozen=True)
class CloseConnection:
    error_code: int
    reason: str


Action = Union[Answer, SendError, StopStream, CloseConnection]


@dataclass
class _StreamIn:
    data: bytearray = field(default_factory=bytearray)
    t2_unix: int = 0            # served time of the packet that carried the last byte
    dirty: bool = False         # bytes arrived in the current packet
    fin: bool = False


class ServerSession:
    """One QUIC connection's TSQ protocol state on the server."""

    def __init__(self, policy: ServerPolicy, stats: ServerStats, residuals: Dict[StampPath, StampResidual],
                 source: str, limiter: Optional[RateLimiter] = None) -> None:
        self.policy = policy
        self.stats = stats
        self.residuals = residuals
        self.source = source
        self.limiter = limiter
        self.alpn: Optional[str] = None
        self._streams: Dict[int, _StreamIn] = {}
        self._done: set[int] = set()          # streams answered or refused: further bytes ignored
        self._done_below = -1                 # ... and every stream up to here not in _streams
        self.last_tx: Optional[Tuple[bytes, int]] = None   # (nonce, served ns of kernel TX) of last answer

    # ------------------------------------------------------------------------------ connection
    def handshake_completed(self, alpn: Optional[str]) -> List[Action]:
        self.alpn = alpn
        if alpn not in self.policy.alpns():
            return [CloseConnection(QUIC_APP_REFUSED, "ALPN tsq required")]
        return []

    @property
    def legacy(self) -> bool:
        return self.alpn == ALPN_LEGACY

    # ------------------------------------------------------------------------------ input
    def datagram_received(self, data: bytes, t2_unix: int, now_s: float) -> List[Action]:
        if self.alpn not in self.policy.alpns():
            return []
        self.stats.requests_datagram += 1
        if self.legacy:  # datagrams are not part of tsq/1
            self.stats.dropped += 1
            return []
        return self._request(bytes(data), t2_unix, now_s, None)

    def stream_data(self, stream_id: int, data: bytes, end_stream: bool, t2_unix: int) -> List[Action]:
        """Bytes of one STREAM frame; requests are completed in `packet_done()`."""
        if stream_id % 4 != 0 or stream_id in self._done:  # only client-initiated bidirectional
            return []
        if stream_id <= self._done_below and stream_id not in self._streams:
            return []
        st = self._streams.setdefault(stream_id, _StreamIn())
        if data:
            st.data += data
            st.t2_unix = t2_unix
            st.dirty = True
        st.fin = st.fin or end_stream
        if len(st.data) > MAX_REQUEST_BYTES:
            # Refused once: an Error TLV, then STOP_SENDING so the peer stops sending more.
            self._finish(stream_id)
            self.stats.oversized += 1
            self.stats.errors_sent += 1
            return [SendError(stream_id, wire.encode_error(wire.ERR_MALFORMED, "request too long")),
                    StopStream(stream_id, QUIC_APP_REFUSED)]
        if st.fin and not st.dirty:
            st.dirty = True  # a bare FIN completes what was there (with the last data's T2)
        return []

    def stream_reset(self, stream_id: int) -> None:
        self._finish(stream_id)

    def packet_done(self, now_s: float) -> List[Action]:
        """The end of one received packet: answer every request it completed."""
        actions: List[Action] = []
        for stream_id in [s for s, st in self._streams.items() if st.dirty]:
            st = self._streams[stream_id]
            st.dirty = False
            if not (st.fin or request_complete(bytes(st.data))):
                continue
            self._finish(stream_id)
            if self.alpn not in self.policy.alpns():
                continue
            self.stats.requests_stream += 1
            actions += self._request(bytes(st.data), st.t2_unix, now_s, stream_id)
        return actions

    def _finish(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._done.add(stream_id)
        if len(self._done) > 1024:  # stream ids only grow: forget the oldest, remember a floor
            self._done_below = max(self._done) - 4 * 512
            self._done = {s for s in self._done if s > self._done_below}

    # ------------------------------------------------------------------------------ answering
    def _request(self, data: bytes, t2_unix: int, now_s: float, stream_id: Optional[int]) -> List[Action]:
        if self.limiter is not None and not self.limiter.allow(self.source, now_s):
            self.stats.rate_limited += 1
            return self._reject(stream_id, ERR_RATE_LIMITED, "rate limited")
        try:
            req = wire.decode_request(data)
        except wire.WireError as exc:
            return self._reject(stream_id, wire.ERR_MALFORMED, str(exc))
        if req.signature_request and (self.policy.signer is None or self.legacy):
            why = "signatures are not part of tsq/1" if self.legacy else "this server does not sign"
            return self._reject(stream_id, wire.ERR_AUTH_REQUIRED, why)
        return [self.plan(req, len(data), t2_unix, stream_id)]

    def plan(self, req: wire.Request, request_size: int, t2_unix: int, stream_id: Optional[int]) -> Answer:
        """The response to a decoded request: builder (T3 zero), stamp policy, xleave report."""
        builder = self.build_response(req, t2_unix, request_size)
        signed = req.signature_request and not self.legacy
        path = (signed, stream_id is None)
        comp = self.residuals[path].estimate_ns if self.policy.compensate else 0
        return Answer(stream_id, builder, req.nonce, path, self.policy.late_stamps and not signed, comp)

    def build_response(self, req: wire.Request, t2_unix: int, request_size: int) -> wire.ResponseBuilder:
        """The response with T3 still zero. Legacy `tsq/1` peers get TLVs 1-3 only."""
        t2 = unix_ns_to_ntp64(t2_unix)
        if self.legacy:
            return wire.ResponseBuilder(wire.Request(nonce=req.nonce), t2)
        extra: Tuple[Tuple[str, str], ...] = ()
        if self.last_tx is not None and (XLEAVE_REQUEST_KEY, "1") in req.metadata:
            extra = ((XLEAVE_RESPONSE_KEY, format_xleave(*self.last_tx)),)
        return self.policy.builder(req, t2, request_size, extra)

    def _reject(self, stream_id: Optional[int], code: int, reason: str) -> List[Action]:
        if stream_id is None:
            self.stats.dropped += 1  # draft §6.6: silent discard in Datagram Mode
            return []
        self.stats.errors_sent += 1
        return [SendError(stream_id, wire.encode_error(code, reason))]

    def response_sent(self, nonce: bytes, path: StampPath, stamped_unix: int, tx_served_ns: int) -> None:
        """The kernel's TX time of an answer (served timescale): residual and the next xleave report."""
        self.residuals[path].add(tx_served_ns - stamped_unix)
        self.last_tx = (nonce, tx_served_ns)
