"""The TSQ client's I/O edge: one persistent QUIC connection per server, kernel-stamped T1/T4.

All protocol decisions live in `tsq.session.client.ClientSession` (sans-IO): nonces, mode and
fallback, the warm-up exchange after each handshake, retries, interleaved refinement, pairing,
deadlines, stall detection, stream framing and the draft §6.6 checks. This file only moves bytes
between the socket, aioquic and the session, stamps T1/T4 with kernel timestamps, and turns the
session's jobs into awaitables: `exchange()`, `sample()`, `burst()`, `send_raw()`. Failures raise a
`TsqError` subclass; after a connection failure the next call reconnects.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.tls import SessionTicket

from tsq import clock, wire
from tsq.auth import Verifier
from tsq.quic import compat
from tsq.quic.driver import QuicDriver
from tsq.quic.transport import Address, UdpEndpoint
from tsq.quic.trust import TrustError, check_pin, client_configuration
from tsq.session.alpn import ALPN_LEGACY, ALPN_TSQ
from tsq.session.client import (
    ClientOptions,
    ClientSession,
    Discarded,
    Instant,
    JobDone,
    ModeFallback,
    Outgoing,
    Stalled,
    StopReading,
)
from tsq.session.errors import (
    TsqError,
    TsqHandshakeError,
    TsqInvalidResponse,
    TsqModeUnavailable,
    TsqServerError,
    TsqTimeout,
    TsqUnreachable,
)
from tsq.sync.exchange import Exchange

log = logging.getLogger("tsq.client")

DEFAULT_PORT = 443
MODES = ("auto", "datagram", "stream")
QUIC_APP_REFUSED = 0x178

__all__ = [
    "DEFAULT_PORT",
    "MODES",
    "TsqClient",
    "TsqError",
    "TsqHandshakeError",
    "TsqInvalidResponse",
    "TsqModeUnavailable",
    "TsqServerError",
    "TsqTimeout",
    "TsqUnreachable",
    "parse_server",
]


def parse_server(spec: str, default_port: int = DEFAULT_PORT) -> Tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address -> (host, port). ValueError if bad."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            return host, _port(rest[1:], spec)
        return host, default_port
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, _port(port, spec)
    return spec, default_port


def _port(text: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{spec!r}: port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{spec!r}: port {port} is out of range")
    return port


def _now() -> Instant:
    return Instant(clock.raw_ns(), clock.realtime_ns())


@dataclass
class _Link:
    """One QUIC connection, its socket and its TSQ session."""

    quic: QuicConnection
    endpoint: UdpEndpoint
    session: ClientSession
    handshake: asyncio.Future[None]
    driver: Optional[QuicDriver] = None
    dead: Optional[TsqError] = None
    jobs: Dict[int, asyncio.Future[JobDone]] = field(default_factory=dict)
    by_stream: Dict[int, int] = field(default_factory=dict)      # stream id -> session key
    stream_of: Dict[int, int] = field(default_factory=dict)      # session key -> stream id
    pending_tx: Dict[int, int] = field(default_factory=dict)     # TX-stamp key -> session key
    deadline: Optional[asyncio.TimerHandle] = None
    opened_raw: int = 0                                          # raw ns when the handshake began
    trusted: bool = False                                        # passed the certificate/pin/ALPN checks
    pending_ticket: Optional[SessionTicket] = None               # a ticket that came before that



def _resolver_host(host: str) -> Union[str, bytes]:
    """`host` for getaddrinfo: an ASCII name as bytes, which Python passes on as they are, where a
    str is first encoded with the `idna` codec, whose import (stringprep, unicodedata) is ~0.4 MB of
    a Raspberry Pi gateway's 40 (docs/benchmarks.md). A non-ASCII name stays a str (IDNA needed)."""
    return host.encode("ascii") if host.isascii() else host

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
        alpn: Sequence[str] = (ALPN_TSQ,),
        allow_legacy_alpn: bool = False,
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
        allow_legacy = allow_legacy_alpn or ALPN_LEGACY in alpn
        self._alpn = list(alpn) if alpn else [ALPN_TSQ]
        if allow_legacy and ALPN_LEGACY not in self._alpn:
            self._alpn.append(ALPN_LEGACY)
        self.options = ClientOptions(
            name=self.name, precision=precision, interleaved=interleaved, paired=paired,
            require_signature=require_signature, verifier=verifier, metadata_query=metadata_query,
            allow_legacy=allow_legacy, timeout_ns=round(timeout_s * 1e9), max_offset_ns=max_offset_ns)
        self.kernel_stamps = kernel_stamps
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._link: Optional[_Link] = None
        self.last_response: Optional[wire.Response] = None
        # Interleaved refinement: the previous exchange, completed with the precise kernel TX time
        # of its response, as reported by the server in the next response (None when not given).
        self.last_interleaved: Optional[Exchange] = None
        self.discarded_responses = 0
        self.discards: List[str] = []          # the last few reasons, oldest first
        self.fallbacks = 0
        self.connections = 0
        self.resumed = 0                       # handshakes that resumed a TLS session
        self._ticket: Optional[SessionTicket] = None
        self._token = b""

    # ------------------------------------------------------------------------------ state
    @property
    def reconnects(self) -> int:
        """Connections made after the first (a stall, a closed connection, a server restart)."""
        return max(0, self.connections - 1)

    @property
    def verifier(self) -> Optional[Verifier]:
        return self.options.verifier

    @property
    def require_signature(self) -> bool:
        return self.options.require_signature

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.dead is None and link.handshake.done() and link.session.connected

    @property
    def alpn_protocol(self) -> Optional[str]:
        return self._link.session.alpn if self._link is not None else None

    @property
    def datagrams_available(self) -> bool:
        """Whether the connected server enabled RFC 9221 DATAGRAM frames (and speaks `tsq`)."""
        return self._link is not None and self._link.session.datagrams_ok

    def _keep_token(self, token: bytes) -> None:
        self._token = bytes(token)

    # ------------------------------------------------------------------------------ connect
    async def connect(self) -> None:
        """Connect and handshake (no-op when connected). Raises TsqUnreachable, TsqHandshakeError
        or TsqTimeout."""
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
            infos = await loop.getaddrinfo(_resolver_host(self.host), self.port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
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
        # A reconnect resumes the TLS session (no certificate chain, one round trip less of
        # crypto) and presents the server's address-validation token (no Retry round trip), both
        # from the previous connection: on links where bytes cost money.
        ticket = self._ticket
        if ticket is not None and ticket.not_valid_after > datetime.datetime.now(datetime.timezone.utc):
            config.session_ticket = ticket
        if self._token:
            config.token = self._token
        holder: List[_Link] = []

        def keep_ticket(ticket: SessionTicket) -> None:
            # Only a connection that passed the trust checks may hand out a ticket: a resumed
            # session skips the pin check (it has no certificate to check).
            if holder and holder[0].trusted:
                self._ticket = ticket
            elif holder:
                holder[0].pending_ticket = ticket

        quic = QuicConnection(configuration=config, session_ticket_handler=keep_ticket,
                              token_handler=self._keep_token)

        def on_datagram(data: bytes, src: Address, rx_raw: int, rx_rt: Optional[int]) -> None:
            if holder:
                self._on_datagram(holder[0], data, src, rx_raw, rx_rt is not None)

        def on_tx(key: int, rt: int) -> None:
            if holder:
                skey = holder[0].pending_tx.pop(key, None)
                if skey is not None:
                    holder[0].session.tx_stamp(skey, holder[0].endpoint.realtime_to_raw(rt))

        def on_error(exc: OSError) -> None:
            if holder:
                self._fail_link(holder[0], TsqUnreachable(f"{self.name}: {exc.strerror or exc}"))

        def on_timer() -> None:
            if holder:
                self._process_events(holder[0], clock.raw_ns(), False)

        endpoint = UdpEndpoint(sock, on_datagram, kernel_stamps=self.kernel_stamps,
                               on_tx_stamp=on_tx, on_error=on_error)
        session = ClientSession(self.options, offer_datagrams=self._offer_datagrams)
        link = _Link(quic=quic, endpoint=endpoint, session=session, handshake=loop.create_future())
        link.driver = QuicDriver(quic, endpoint, on_timer)
        holder.append(link)
        link.opened_raw = clock.raw_ns()
        quic.connect(tuple(addr), now=loop.time())
        link.driver.flush()
        return link

    def _drop_link(self) -> None:
        link = self._link
        self._link = None
        if link is None:
            return
        if link.dead is None:
            link.dead = TsqUnreachable(f"{self.name}: connection closed")
            link.session.connection_lost(link.dead)
            self._dispatch(link)
        self._close_link(link)

    def _close_link(self, link: _Link) -> None:
        _fail(link.handshake, link.dead or TsqUnreachable(f"{self.name}: connection closed"))
        for fut in link.jobs.values():
            _fail(fut, link.dead or TsqUnreachable(f"{self.name}: connection closed"))
        link.jobs.clear()
        if link.deadline is not None:
            link.deadline.cancel()
        if link.driver is not None:
            link.driver.close()
        link.endpoint.close()

    async def close(self) -> None:
        """Close the connection (CONNECTION_CLOSE to the server) and the socket."""
        link = self._link
        if link is not None and link.dead is None and link.driver is not None:
            link.quic.close(reason_phrase="client closing")
            link.driver.flush()
        self._drop_link()

    def _fail_link(self, link: _Link, error: TsqError) -> None:
        if link.dead is not None:
            return
        link.dead = error
        _fail(link.handshake, error)
        link.session.connection_lost(error)
        self._dispatch(link)
        for fut in link.jobs.values():
            _fail(fut, error)

    # ------------------------------------------------------------------------------ packets in
    def _on_datagram(self, link: _Link, data: bytes, addr: Address, rx_raw: int, kernel: bool) -> None:
        if link.dead is not None:
            return
        link.session.packet_received(rx_raw)
        link.quic.receive_datagram(data, addr, now=asyncio.get_running_loop().time())
        self._process_events(link, rx_raw, kernel)

    def _process_events(self, link: _Link, rx_raw: int, kernel: bool) -> None:
        session = link.session
        now = _now()
        while link.dead is None:
            event = link.quic.next_event()
            if event is None:
                break
            if isinstance(event, events.DatagramFrameReceived):
                session.datagram_received(now, event.data, rx_raw, kernel)
            elif isinstance(event, events.StreamDataReceived):
                key = link.by_stream.get(event.stream_id)
                if key is not None:
                    session.stream_data(key, event.data, event.end_stream, rx_raw, kernel)
            elif isinstance(event, events.StreamReset):
                key = link.by_stream.get(event.stream_id)
                if key is not None:
                    session.stream_reset(now, key)
            elif isinstance(event, events.HandshakeCompleted):
                self._handshake_done(link, event, now)
            elif isinstance(event, events.ConnectionTerminated):
                reason = event.reason_phrase or f"error 0x{event.error_code:x}"
                if not link.handshake.done():
                    if "ALPN" in reason and not self.options.allow_legacy:
                        reason += (" (this client offers only 'tsq'; a server of the implementation "
                                   "deployed in the wild speaks only tsq/1: --allow-legacy-alpn)")
                    self._fail_link(link, TsqHandshakeError(f"{self.name}: handshake failed: {reason}"))
                else:
                    self._fail_link(link, TsqUnreachable(f"{self.name}: connection closed: {reason}"))
        if link.dead is None:
            session.packet_done(now)
        self._pump(link)

    def _handshake_done(self, link: _Link, event: events.HandshakeCompleted, now: Instant) -> None:
        try:
            # A resumed session shows no certificate: it proves the server holds the secret of a
            # session whose certificate passed this check, so the pin carries over.
            if self._pin is not None and not event.session_resumed:
                try:
                    check_pin(compat.peer_certificate(link.quic), self._pin)
                except TrustError as exc:
                    raise TsqHandshakeError(f"{self.name}: {exc}") from exc
            link.session.handshake_completed(now, event.alpn_protocol,
                                             compat.peer_allows_datagrams(link.quic),
                                             now.raw_ns - link.opened_raw)
        except TsqHandshakeError as error:
            link.quic.close(error_code=QUIC_APP_REFUSED, reason_phrase="tsq trust check failed")
            if link.driver is not None:
                link.driver.flush()
            self._fail_link(link, error)
            return
        link.trusted = True
        if link.pending_ticket is not None:
            self._ticket, link.pending_ticket = link.pending_ticket, None
        self.connections += 1
        self.resumed += bool(event.session_resumed)
        if not link.handshake.done():
            link.handshake.set_result(None)

    # ------------------------------------------------------------------------------ packets out
    def _pump(self, link: _Link) -> None:
        """Send what the session queued (one flush per message, to find its datagram), then
        dispatch the session's events and re-arm its deadline."""
        if link.dead is None and link.driver is not None:
            for out in link.session.take_outgoing():
                if isinstance(out, Outgoing):
                    self._send(link, out)
                elif isinstance(out, StopReading):
                    sid = link.stream_of.pop(out.key, None)
                    if sid is not None:
                        link.quic.stop_stream(sid, QUIC_APP_REFUSED)
            link.driver.flush()
        self._dispatch(link)
        self._arm_deadline(link)

    def _send(self, link: _Link, out: Outgoing) -> None:
        assert link.driver is not None
        if out.mode == "datagram":
            link.quic.send_datagram_frame(out.data)
        else:
            sid = link.quic.get_next_available_stream_id()
            link.by_stream[sid] = out.key
            link.stream_of[out.key] = sid
            link.quic.send_stream_data(sid, out.data, end_stream=True)
        link.driver.stamper.arm(out.needle)
        flushed = link.driver.flush(marked=True)
        link.driver.stamper.disarm()
        if flushed is None:
            return
        link.session.sent(out.key, flushed.sent_raw)
        if flushed.tx_key is not None:
            link.pending_tx[flushed.tx_key] = out.key
            if len(link.pending_tx) > 256:
                link.pending_tx.clear()
        link.endpoint.drain_tx_stamps()

    def _dispatch(self, link: _Link) -> None:
        session = link.session
        while True:
            event = session.next_event()
            if event is None:
                break
            if isinstance(event, JobDone):
                fut = link.jobs.pop(event.job, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
            elif isinstance(event, Discarded):
                self.discarded_responses += 1
                self.discards = [*self.discards[-7:], event.reason]
                log.warning("%s", event.reason)   # draft §6.6: discard, log a diagnostic warning
            elif isinstance(event, ModeFallback):
                self.fallbacks += 1
                log.warning("%s", event.reason)
            elif isinstance(event, Stalled):
                self._fail_link(link, TsqTimeout(event.reason))
        self.last_response = session.last_response or self.last_response

    def _arm_deadline(self, link: _Link) -> None:
        if link.deadline is not None:
            link.deadline.cancel()
            link.deadline = None
        at = link.session.next_deadline()
        if at is None or link.dead is not None:
            return
        delay = max(0.0, (at - clock.raw_ns()) / 1e9)
        link.deadline = asyncio.get_running_loop().call_later(delay, self._on_deadline, link)

    def _on_deadline(self, link: _Link) -> None:
        link.deadline = None
        if link.dead is not None:
            return
        link.session.handle_timer(_now())
        self._pump(link)

    # ------------------------------------------------------------------------------ jobs
    async def _job(self, start: Callable[[ClientSession, Instant], int]) -> JobDone:
        link = await self._ensure_link()
        job = start(link.session, _now())
        fut: asyncio.Future[JobDone] = asyncio.get_running_loop().create_future()
        link.jobs[job] = fut
        self._pump(link)
        done = await fut
        self.last_interleaved = link.session.last_interleaved
        return done

    async def exchange(self, mode: str = "auto") -> Exchange:
        """One validated exchange (connecting and warming up first when needed)."""
        done = await self._job(lambda s, now: s.start_exchange(now, mode))
        if done.error is not None:
            raise done.error
        assert done.exchange is not None
        return done.exchange

    async def sample(self, mode: str = "auto") -> Exchange:
        """The best sample this server can give now (see ClientSession._sample_job): the previous
        exchange refined with the server's reported TX time when interleaving, retried at once after
        a loss, with the warm partner exchange when `paired`."""
        done = await self._job(lambda s, now: s.start_sample(now, mode))
        if done.error is not None:
            raise done.error
        assert done.exchange is not None
        return done.exchange

    async def burst(self, count: int, mode: str = "auto", interval_s: float = 0.0) -> List[Exchange]:
        """`count` samples back to back (or `interval_s` apart); failures are skipped, the last
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
        try:
            done = await asyncio.wait_for(self._job(lambda s, now: s.start_raw(now, data, mode)),
                                          (timeout_s or self.timeout_s) + self.connect_timeout_s)
        except (asyncio.TimeoutError, TsqInvalidResponse):
            return None
        return done.payload


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail a future and mark its exception retrieved (nobody may be waiting on it)."""
    if not future.done():
        future.set_exception(error)
        future.exception()
