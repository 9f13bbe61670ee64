"""The TSQ client: one persistent QUIC connection per server, kernel-stamped T1/T4.

`TsqClient.exchange()` returns a `tsq.sync.exchange.Exchange` (T1/T4 raw ns, T2/T3 unix ns). The
first exchange after every handshake is a discarded warm-up (it is biased: both ends are still
busy with handshake leftovers). Datagram mode is used when the server's transport parameters allow
DATAGRAM frames, else streams; a DATAGRAM frame is never sent to a peer that did not enable them.
Failures raise a `TsqError` subclass; after a connection failure the next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection

from tsq import clock, wire
from tsq.auth import Verifier
from tsq.quic.transport import (
    XLEAVE_REQUEST_KEY,
    XLEAVE_RESPONSE_KEY,
    Address,
    PacketStamper,
    UdpEndpoint,
)
from tsq.quic.trust import ALPN_LEGACY, ALPN_PROTOCOLS, ALPN_TSQ, TrustError, check_pin, client_configuration
from tsq.sync.exchange import Exchange, SampleRejected, check

log = logging.getLogger("tsq.client")

DEFAULT_PORT = 443
MODES = ("auto", "datagram", "stream")
# An answer is given up on after RESPONSE_TIMEOUT_RTTS x the slowest recent round trip (at least
# MIN_RESPONSE_TIMEOUT_S, at most the client's timeout_s): a lost datagram then costs one poll,
# as in NTP, not a poll plus a second of waiting.
RESPONSE_TIMEOUT_RTTS = 8
MIN_RESPONSE_TIMEOUT_S = 0.25
# A datagram connection counts as stalled (dropped and re-opened) after this many timeouts in a
# row *and* this long without any packet from the server: random loss of 20 % each way is normal
# and must not cost a new handshake; a server that vanished silently must.
STALL_TIMEOUTS = 3
STALL_SILENCE_S = 8.0


class TsqError(Exception):
    """Any failure of a TSQ exchange or connection; the message says what happened."""


class TsqUnreachable(TsqError):
    """No QUIC connection: the server refused (ICMP), closed the connection, or is not there."""


class TsqHandshakeError(TsqError):
    """The handshake failed: certificate, pin, or ALPN."""


class TsqTimeout(TsqError):
    """No (valid) answer in time."""


class TsqInvalidResponse(TsqError):
    """A response came back but failed the draft §6.6 / signature checks."""


class TsqServerError(TsqInvalidResponse):
    """The server answered with an Error TLV."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"server error {code}: {reason or '(no reason)'}")
        self.code = code
        self.reason = reason


class TsqModeUnavailable(TsqError):
    """Datagram mode was asked for but the server did not enable DATAGRAM frames."""


def parse_server(spec: str, default_port: int = DEFAULT_PORT) -> Tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address -> (host, port)."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            return host, int(rest[1:])
        return host, default_port
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec, default_port


@dataclass
class _Waiter:
    nonce: bytes
    future: asyncio.Future[Tuple[bytes, int, bool]]
    t1_user: int = 0
    t1_kernel: Optional[int] = None


@dataclass
class _Link:
    """One QUIC connection and its socket."""

    quic: QuicConnection
    endpoint: UdpEndpoint
    stamper: PacketStamper
    handshake: asyncio.Future[None]
    alpn: Optional[str] = None
    datagrams_ok: bool = False
    warmed_up: bool = False
    dead: Optional[TsqError] = None
    timer: Optional[asyncio.TimerHandle] = None
    by_nonce: Dict[bytes, _Waiter] = field(default_factory=dict)
    by_stream: Dict[int, _Waiter] = field(default_factory=dict)
    stream_data: Dict[int, bytearray] = field(default_factory=dict)
    pending_tx: Dict[int, _Waiter] = field(default_factory=dict)
    timeouts_in_a_row: int = 0
    last_rx: float = 0.0  # loop time of the last packet from the server
    round_trips: List[float] = field(default_factory=list)  # recent answered exchanges, s
    previous: Optional[Tuple[bytes, Exchange]] = None  # last basic exchange, awaiting refinement
    xleave_seen: bool = False  # the server reports precise TX times (interleaved)


class TsqClient:
    """A client of one TSQ server, on the running asyncio loop. Concurrent `exchange()` calls are
    allowed (each has its own stream or nonce)."""

    def __init__(
        self,
        server: str,
        *,
        ca: Optional[str] = None,
        pin: Optional[str] = None,
        insecure: bool = False,
        server_name: Optional[str] = None,
        datagrams: bool = True,
        alpn: Sequence[str] = ALPN_PROTOCOLS,
        verifier: Optional[Verifier] = None,
        require_signature: bool = False,
        precision: bool = True,
        metadata_query: bool = True,
        interleaved: bool = True,
        paired: bool = False,
        kernel_stamps: bool = True,
        timeout_s: float = 1.0,
        connect_timeout_s: float = 3.0,
        max_offset_ns: int = 86_400 * 10**9,
    ) -> None:
        self.host, self.port = parse_server(server)
        self.name = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
        self._ca, self._pin, self._insecure = ca, pin, insecure
        self._server_name = server_name or self.host
        self._offer_datagrams = datagrams
        self._alpn = list(alpn)
        self.verifier = verifier
        self.require_signature = require_signature
        self.precision = precision
        self.metadata_query = metadata_query
        self.interleaved = interleaved
        self.paired = paired
        self.kernel_stamps = kernel_stamps
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_offset_ns = max_offset_ns
        self._link: Optional[_Link] = None
        self._connecting: Optional[asyncio.Future[_Link]] = None
        self.last_response: Optional[wire.Response] = None
        # Interleaved refinement: the previous exchange, completed with the precise kernel TX time
        # of its response, as reported by the server in the next response (None when not given).
        self.last_interleaved: Optional[Exchange] = None
        self.discarded_responses = 0

    # ------------------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.dead is None and self._link.handshake.done()

    @property
    def alpn_protocol(self) -> Optional[str]:
        return self._link.alpn if self._link is not None else None

    @property
    def datagrams_available(self) -> bool:
        """Whether the connected server enabled RFC 9221 DATAGRAM frames (and speaks `tsq`)."""
        return self._link is not None and self._link.datagrams_ok

    # ------------------------------------------------------------------------------ connect
    async def connect(self) -> None:
        """Connect and handshake (no-op when connected).

        Raises TsqUnreachable, TsqHandshakeError or TsqTimeout.
        """
        await self._ensure_link()

    async def _ensure_link(self) -> _Link:
        link = self._link
        if link is not None and link.dead is None and link.handshake.done():
            return link
        if link is not None and link.dead is not None:
            self._drop_link()
        if self._link is None:
            self._link = await self._open_link()
        link = self._link
        try:
            await asyncio.wait_for(asyncio.shield(link.handshake), self.connect_timeout_s)
        except asyncio.TimeoutError:
            self._drop_link()
            raise TsqTimeout(f"{self.name}: no QUIC handshake within {self.connect_timeout_s:g} s") from None
        except TsqError:
            self._drop_link()
            raise
        return link

    async def _open_link(self) -> _Link:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise TsqUnreachable(f"{self.name}: cannot resolve: {exc}") from exc
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect(addr)  # connected: ICMP errors surface as ECONNREFUSED
        except OSError as exc:
            sock.close()
            raise TsqUnreachable(f"{self.name}: {exc}") from exc
        config = client_configuration(
            self._server_name, ca=self._ca, pin=self._pin, insecure=self._insecure,
            datagrams=self._offer_datagrams, alpn=self._alpn,
        )
        quic = QuicConnection(configuration=config)
        holder: List[_Link] = []

        def on_datagram(data: bytes, src: Address, rx_raw: int, rx_rt: Optional[int]) -> None:
            if holder:
                self._on_datagram(holder[0], data, src, rx_raw, rx_rt is not None)

        def on_tx(key: int, rt: int) -> None:
            if holder:
                waiter = holder[0].pending_tx.pop(key, None)
                if waiter is not None:
                    waiter.t1_kernel = holder[0].endpoint.realtime_to_raw(rt)

        def on_error(exc: OSError) -> None:
            if holder:
                self._fail_link(holder[0], TsqUnreachable(f"{self.name}: {exc.strerror or exc}"))

        endpoint = UdpEndpoint(sock, on_datagram, kernel_stamps=self.kernel_stamps,
                               on_tx_stamp=on_tx, on_error=on_error)
        link = _Link(quic=quic, endpoint=endpoint, stamper=PacketStamper(quic),
                     handshake=loop.create_future())
        holder.append(link)
        quic.connect(tuple(addr), now=loop.time())
        self._flush(link)
        return link

    def _drop_link(self) -> None:
        link = self._link
        self._link = None
        if link is None:
            return
        if link.timer is not None:
            link.timer.cancel()
        if link.dead is None:
            link.dead = TsqUnreachable(f"{self.name}: connection closed")
        for waiter in list(link.by_nonce.values()) + list(link.by_stream.values()):
            _fail(waiter.future, link.dead)
        _fail(link.handshake, link.dead)
        link.endpoint.close()

    async def close(self) -> None:
        """Close the connection (CONNECTION_CLOSE to the server) and the socket."""
        link = self._link
        if link is not None and link.dead is None:
            link.quic.close(reason_phrase="client closing")
            self._flush(link)
        self._drop_link()

    def _fail_link(self, link: _Link, error: TsqError) -> None:
        if link.dead is not None:
            return
        link.dead = error
        _fail(link.handshake, error)
        for waiter in list(link.by_nonce.values()) + list(link.by_stream.values()):
            _fail(waiter.future, error)

    # ------------------------------------------------------------------------------ packets in
    def _on_datagram(self, link: _Link, data: bytes, addr: Address, rx_raw: int, kernel: bool) -> None:
        if link.dead is not None:
            return
        loop = asyncio.get_running_loop()
        link.last_rx = loop.time()
        link.quic.receive_datagram(data, addr, now=link.last_rx)
        self._process_events(link, rx_raw, kernel)
        self._flush(link)

    def _process_events(self, link: _Link, rx_raw: int, kernel: bool) -> None:
        while True:
            event = link.quic.next_event()
            if event is None:
                return
            if isinstance(event, events.DatagramFrameReceived):
                self._datagram_response(link, event.data, rx_raw, kernel)
            elif isinstance(event, events.StreamDataReceived):
                buf = link.stream_data.setdefault(event.stream_id, bytearray())
                buf += event.data
                if event.end_stream:
                    payload = bytes(link.stream_data.pop(event.stream_id))
                    waiter = link.by_stream.pop(event.stream_id, None)
                    if waiter is not None and not waiter.future.done():
                        waiter.future.set_result((payload, rx_raw, kernel))
            elif isinstance(event, events.StreamReset):
                waiter = link.by_stream.pop(event.stream_id, None)
                if waiter is not None:
                    _fail(waiter.future, TsqInvalidResponse(f"{self.name}: stream reset by server"))
            elif isinstance(event, events.HandshakeCompleted):
                self._handshake_done(link, event)
            elif isinstance(event, events.ConnectionTerminated):
                reason = event.reason_phrase or f"error 0x{event.error_code:x}"
                if not link.handshake.done():
                    self._fail_link(link, TsqHandshakeError(f"{self.name}: handshake failed: {reason}"))
                else:
                    self._fail_link(link, TsqUnreachable(f"{self.name}: connection closed: {reason}"))

    def _handshake_done(self, link: _Link, event: events.HandshakeCompleted) -> None:
        link.alpn = event.alpn_protocol
        error: Optional[TsqError] = None
        if link.alpn not in ALPN_PROTOCOLS:
            error = TsqHandshakeError(f"{self.name}: server negotiated ALPN {link.alpn!r}, not 'tsq'")
        elif self._pin is not None:
            try:
                check_pin(getattr(link.quic.tls, "_peer_certificate", None), self._pin)
            except TrustError as exc:
                error = TsqHandshakeError(f"{self.name}: {exc}")
        if error is not None:
            link.quic.close(error_code=0x178, reason_phrase="tsq trust check failed")
            self._flush(link)
            self._fail_link(link, error)
            return
        remote_max = getattr(link.quic, "_remote_max_datagram_frame_size", None)
        link.datagrams_ok = bool(self._offer_datagrams and link.alpn == ALPN_TSQ and remote_max)
        if not link.handshake.done():
            link.handshake.set_result(None)

    def _datagram_response(self, link: _Link, data: bytes, rx_raw: int, kernel: bool) -> None:
        nonce = data[2:18] if len(data) >= 18 and data[0] == wire.NONCE and data[1] == 16 else b""
        waiter = link.by_nonce.pop(nonce, None)
        if waiter is None or waiter.future.done():
            # Draft §6.6: a response whose nonce matches no outstanding request is discarded.
            self.discarded_responses += 1
            log.warning("%s: discarded a datagram response with an unknown nonce", self.name)
            return
        waiter.future.set_result((data, rx_raw, kernel))

    # ------------------------------------------------------------------------------ packets out
    def _flush(self, link: _Link, waiter: Optional[_Waiter] = None) -> None:
        loop = asyncio.get_running_loop()
        datagrams = link.quic.datagrams_to_send(now=loop.time())
        hit = -1
        if waiter is not None and link.stamper.hit_packet >= 0:
            hit = link.stamper.hit_packet + len(datagrams) - link.stamper.packets
        for index, (payload, _addr) in enumerate(datagrams):
            if waiter is not None and (index == hit or (hit < 0 and index == 0)):
                waiter.t1_user = clock.raw_ns()
            key = link.endpoint.send(payload)
            if waiter is not None and key is not None and index == hit:
                link.pending_tx[key] = waiter
        if link.pending_tx:
            link.endpoint.drain_tx_stamps()
            if len(link.pending_tx) > 256:
                link.pending_tx.clear()
        self._arm_timer(link)

    def _arm_timer(self, link: _Link) -> None:
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        at = link.quic.get_timer()
        if at is not None and link.dead is None:
            link.timer = asyncio.get_running_loop().call_at(at, self._on_timer, link)

    def _on_timer(self, link: _Link) -> None:
        link.timer = None
        if link.dead is not None:
            return
        link.quic.handle_timer(now=asyncio.get_running_loop().time())
        self._process_events(link, clock.raw_ns(), False)
        if link.dead is None:
            self._flush(link)

    # ------------------------------------------------------------------------------ exchanges
    def _choose_mode(self, link: _Link, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "datagram" and not link.datagrams_ok:
            raise TsqModeUnavailable(f"{self.name}: server did not enable QUIC DATAGRAM frames")
        if mode == "auto":
            return "datagram" if link.datagrams_ok else "stream"
        return mode

    def _request_bytes(self, nonce: bytes, link: _Link) -> bytes:
        if link.alpn == ALPN_LEGACY:
            return wire.encode_request(wire.Request(nonce=nonce))
        meta: Tuple[Tuple[str, str], ...] = ((XLEAVE_REQUEST_KEY, "1"),) if self.interleaved else ()
        req = wire.Request(nonce=nonce, precision=self.precision,
                           signature_request=self.require_signature,
                           metadata_query=self.metadata_query, metadata=meta)
        if self.precision:
            req = wire.pad_request(req)
        return wire.encode_request(req)

    async def exchange(self, mode: str = "auto") -> Exchange:
        """One validated exchange (connecting and warming up first when needed)."""
        link = await self._ensure_link()
        if not link.warmed_up:
            link.warmed_up = True
            with contextlib.suppress(TsqTimeout, TsqInvalidResponse):
                await self._exchange_once(link, mode)  # biased by the handshake: never a sample
            link = await self._ensure_link()
        return await self._exchange_once(link, mode)

    async def sample(self, mode: str = "auto") -> Exchange:
        """The best sample this server can give now.

        With interleaving (`interleaved=True` and a server that reports the kernel TX time of its
        previous response), this is the previous exchange on this connection completed with the
        precise T3; an extra exchange is made when the previous one is missing (first call, loss).
        Each exchange is returned at most once. Otherwise it is `exchange()`'s basic sample.
        A timed-out exchange is retried at once (up to three exchanges in all) on a live connection.

        With `paired=True` every call makes two exchanges back to back and the sample returned is
        the second of the previous call's pair: it left a warm send path (right after a receive),
        like the server's answer, instead of a path gone cold while the client idled.
        """
        ex: Optional[Exchange] = None
        lost: Optional[TsqTimeout] = None
        for _ in range(3):
            self.last_interleaved = None
            try:
                ex = await self.exchange(mode)
            except TsqTimeout as exc:
                # One lost datagram should cost one timeout, not the whole poll interval: try
                # again at once, unless the connection itself gave up.
                if not self.connected:
                    raise
                lost = exc
                continue
            except TsqInvalidResponse:
                if self.last_interleaved is None:
                    raise
            refined = self.last_interleaved
            link = self._link
            if self.paired and self.interleaved and link is not None and link.xleave_seen:
                with contextlib.suppress(TsqTimeout, TsqInvalidResponse):
                    await self.exchange(mode)  # the warm partner, refined by the next call
            if refined is not None:
                return refined
            if ex is not None and (not self.interleaved or link is None or not link.xleave_seen):
                return ex
        if ex is None:
            raise lost if lost is not None else TsqInvalidResponse(f"{self.name}: no valid sample")
        return ex

    async def burst(self, count: int, mode: str = "auto", interval_s: float = 0.0) -> List[Exchange]:
        """`count` exchanges back to back (or `interval_s` apart); failures are skipped, the last
        error is raised when none succeeded."""
        out: List[Exchange] = []
        last: Optional[TsqError] = None
        for i in range(count):
            if i and interval_s > 0:
                await asyncio.sleep(interval_s)
            try:
                out.append(await self.sample(mode))
            except (TsqTimeout, TsqInvalidResponse) as exc:
                last = exc
        if not out and last is not None:
            raise last
        return out

    async def send_raw(self, data: bytes, mode: str = "stream", timeout_s: Optional[float] = None
                       ) -> Optional[bytes]:
        """Send arbitrary bytes as one TSQ message (testing and fuzzing). Stream mode returns the
        server's answer (None if the stream was reset or timed out); datagram mode returns None."""
        link = await self._ensure_link()
        chosen = self._choose_mode(link, mode)
        if chosen == "datagram":
            link.quic.send_datagram_frame(data)
            self._flush(link)
            return None
        waiter = _Waiter(nonce=b"", future=asyncio.get_running_loop().create_future())
        stream_id = link.quic.get_next_available_stream_id()
        link.by_stream[stream_id] = waiter
        link.quic.send_stream_data(stream_id, data, end_stream=True)
        self._flush(link)
        try:
            payload, _, _ = await asyncio.wait_for(asyncio.shield(waiter.future),
                                                   timeout_s or self.timeout_s)
        except (asyncio.TimeoutError, TsqInvalidResponse):
            link.by_stream.pop(stream_id, None)
            return None
        return payload

    async def _exchange_once(self, link: _Link, mode: str) -> Exchange:
        chosen = self._choose_mode(link, mode)
        nonce = os.urandom(wire.NONCE_SIZE)
        data = self._request_bytes(nonce, link)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(nonce=nonce, future=loop.create_future())
        if chosen == "datagram":
            link.by_nonce[nonce] = waiter
            link.quic.send_datagram_frame(data)
        else:
            stream_id = link.quic.get_next_available_stream_id()
            link.by_stream[stream_id] = waiter
            link.quic.send_stream_data(stream_id, data, end_stream=True)
        link.stamper.arm(data[:18])
        sent = loop.time()
        self._flush(link, waiter)
        link.stamper.disarm()
        timeout = self.response_timeout_s(link)
        try:
            payload, t4_raw, kernel_t4 = await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except asyncio.TimeoutError:
            link.by_nonce.pop(nonce, None)
            link.timeouts_in_a_row += 1
            silent = loop.time() - link.last_rx
            if chosen == "stream" or (link.timeouts_in_a_row >= STALL_TIMEOUTS and silent >= STALL_SILENCE_S):
                self._fail_link(link, TsqTimeout(f"{self.name}: connection stalled"))
            raise TsqTimeout(f"{self.name}: no {chosen} response within {timeout:.3g} s") from None
        finally:
            for key in [k for k, w in link.pending_tx.items() if w is waiter]:
                del link.pending_tx[key]
        link.timeouts_in_a_row = 0
        link.round_trips = [*link.round_trips[-7:], loop.time() - sent]
        if waiter.t1_kernel is None and link.endpoint.tx_kernel:
            link.endpoint.drain_tx_stamps()
        return self._validate(link, chosen, waiter, payload, t4_raw, kernel_t4)

    def response_timeout_s(self, link: _Link) -> float:
        """How long to wait for an answer on this link (see RESPONSE_TIMEOUT_RTTS)."""
        if not link.round_trips:
            return self.timeout_s
        return min(self.timeout_s, max(MIN_RESPONSE_TIMEOUT_S, RESPONSE_TIMEOUT_RTTS * max(link.round_trips)))

    def _validate(self, link: _Link, mode: str, waiter: _Waiter, payload: bytes, t4_raw: int,
                  kernel_t4: bool) -> Exchange:
        try:
            resp = wire.decode_response(payload)
        except wire.WireError as exc:
            raise TsqInvalidResponse(f"{self.name}: malformed response: {exc}") from exc
        if isinstance(resp, wire.ErrorResponse):
            raise TsqServerError(resp.code, resp.reason)
        if resp.nonce != waiter.nonce:
            log.warning("%s: response nonce does not match the request: discarded", self.name)
            raise TsqInvalidResponse(f"{self.name}: nonce mismatch")
        self._check_signature(resp)
        pivot = clock.realtime_ns()
        t1_raw = waiter.t1_kernel if waiter.t1_kernel is not None else waiter.t1_user
        ex = Exchange(
            server=self.name, mode=mode, t1_raw=t1_raw,
            t2_unix=clock.ntp64_to_unix_ns(resp.receive_ts, pivot),
            t3_unix=clock.ntp64_to_unix_ns(resp.send_ts, pivot),
            t4_raw=t4_raw, kernel_t1=waiter.t1_kernel is not None, kernel_t4=kernel_t4,
            clock_quality=resp.clock_quality, time_source=resp.time_source, metadata=resp.metadata,
        )
        self.last_response = resp
        # Before checking this sample: its response may carry the previous one's precise T3, and
        # its own T3 may be refined by the next response even when the basic sample fails.
        self._interleave(link, resp, waiter.nonce, ex, pivot)
        try:
            check(ex, raw_to_unix_ns=pivot - clock.raw_ns(), max_offset_ns=self.max_offset_ns)
        except SampleRejected as exc:
            log.info("%s: basic sample rejected: %s", self.name, exc)
            raise TsqInvalidResponse(f"{self.name}: {exc}") from exc
        return ex

    def _check_signature(self, resp: wire.Response) -> None:
        if resp.signature is None:
            if self.require_signature:
                raise TsqInvalidResponse(f"{self.name}: signature requested but response is unsigned")
            return
        if self.verifier is None:
            if self.require_signature:
                raise TsqInvalidResponse(f"{self.name}: no key to verify the signature with")
            return
        if not self.verifier.verify(resp.signature, resp.signed_data):
            raise TsqInvalidResponse(
                f"{self.name}: signature verification failed (key id {resp.signature.key_id})")

    def _interleave(self, link: _Link, resp: wire.Response, nonce: bytes, ex: Exchange, pivot: int) -> None:
        self.last_interleaved = None
        previous = link.previous
        link.previous = (nonce, ex)
        for key, value in resp.metadata:
            if key != XLEAVE_RESPONSE_KEY:
                continue
            link.xleave_seen = True
            if previous is None or previous[1].mode != ex.mode:
                return
            prev_nonce, _, ts = value.partition(":")
            if prev_nonce != previous[0].hex():
                return
            try:
                t3 = clock.ntp64_to_unix_ns(int(ts, 16), pivot)
            except ValueError:
                return
            old = previous[1]
            refined = Exchange(
                server=old.server, mode=old.mode, t1_raw=old.t1_raw, t2_unix=old.t2_unix,
                t3_unix=t3, t4_raw=old.t4_raw, kernel_t1=old.kernel_t1, kernel_t4=old.kernel_t4,
                clock_quality=old.clock_quality, time_source=old.time_source, metadata=old.metadata,
            )
            try:
                check(refined, raw_to_unix_ns=pivot - clock.raw_ns(), max_offset_ns=self.max_offset_ns)
            except SampleRejected:
                return
            self.last_interleaved = refined
            return


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail a future and mark its exception retrieved (nobody may be waiting on it)."""
    if not future.done():
        future.set_exception(error)
        future.exception()
