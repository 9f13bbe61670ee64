"""The TSQ server's I/O edge: aioquic's sans-IO `QuicConnection` and our `ServerSession` on our own
timestamped UDP socket.

This file only moves bytes: datagrams from the socket into the right connection, that connection's
events into its `tsq.session.server.ServerSession` (with T2 = the kernel RX stamp of the packet,
mapped onto the served timescale), and the session's actions back out: an answer gets T3 written
into the plaintext of the packet that carries it right before aioquic encrypts it
(`tsq.quic.driver.PacketStamper`), plus the measured stamp-to-wire residual. Stream mode and
datagram mode share one port. Any exception while handling a packet is counted and contained; it
never stops the loop.

On the open internet (docs/quic.md, "On the open internet"): every new client is validated with a Retry
(tsq.quic.retry) before any connection state exists; an Initial that echoes a valid token and
decrypts is admitted, or refused with CONNECTION_CLOSE (CONNECTION_REFUSED) at once when the
connection or per-address limit is reached; limits count validated peers only. Connections are held
to TSQ's needs (tsq.quic.compat.bound_connection) and freed the moment they end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Type

from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
)
from aioquic.tls import SessionTicket

from tsq import clock, wire
from tsq.quic import compat, fast_exchange
from tsq.quic.driver import Flushed, QuicDriver
from tsq.quic.fast_exchange import FastExchange
from tsq.quic.retry import TOKEN_LIFETIME_S, RetryTokens
from tsq.quic.transport import Address, UdpEndpoint, open_udp_socket
from tsq.quic.trust import server_configuration
from tsq.session.framing import MAX_REQUEST_BYTES
from tsq.session.server import (
    ERR_RATE_LIMITED,
    QUIC_APP_REFUSED,
    Action,
    Answer,
    CloseConnection,
    RateLimiter,
    SendError,
    ServerPolicy,
    ServerSession,
    ServerStats,
    StampPath,
    StopStream,
    stamp_paths,
)

log = logging.getLogger("tsq.server")

# RFC 9000 §14.1: Initial datagrams are at least 1200 bytes; §6.1: no Version Negotiation in
# answer to a smaller datagram (it would be a reflection amplifier).
_MIN_DATAGRAM_FOR_NEW = 1200

# Sized for TSQ (docs/quic.md, "On the open internet": bounded memory). A request is at most
# MAX_REQUEST_BYTES: one byte more of stream window lets the session see an oversized request and
# refuse it once; a client that ignores flow control beyond that is closed by aioquic
# (FLOW_CONTROL_ERROR).
STREAM_WINDOW = MAX_REQUEST_BYTES + 1
# Concurrent client streams. Exchanges are sequential, but a stream only finishes when the client's
# ACK of its response arrives, and aioquic announces new stream credit in batches (when less than
# half is left): with 4 a client could hit the limit when its ACKs lag, and a request held back
# until MAX_STREAMS arrives leaves in a later flush without its kernel T1. 8 leaves ~3 spare.
MAX_STREAMS = 8
CONNECTION_WINDOW = MAX_STREAMS * STREAM_WINDOW
# Clients poll at most every 2**maxpoll s (default maxpoll 6: 64 s); a connection survives two
# polls in a row without a packet (one lost exchange and its retry) and is then forgotten. A
# client polling less often re-handshakes per poll (docs/benchmarks.md: bytes per day).
DEFAULT_IDLE_TIMEOUT_S = 150.0


class ServedClock:
    """The server's time source: served unix ns = clock(clock_id) + add_ns.

    `realtime`: CLOCK_REALTIME. `tai`: CLOCK_TAI minus the kernel's TAI-UTC offset (whole seconds).
    `phc:/dev/ptpN`: a PTP hardware clock read directly. `monotonic`: CLOCK_MONOTONIC, which is not
    UTC (add it with `offset_ns`): a steady stand-in for tests on a machine whose wall clock is
    stepped, as a VM's is while its host corrects it (emulators' clocks follow CLOCK_MONOTONIC, and
    a device refuses a timescale that runs 0.5 % from its ticks). `offset_ns` is the calibration
    added to all served time (like chrony's `offset`). Kernel packet stamps (realtime) are mapped
    onto it with `from_realtime`.
    """

    def __init__(self, spec: str = "realtime", offset_ns: int = 0) -> None:
        self.spec = spec
        self.offset_ns = offset_ns
        self._phc: Optional[clock.PhcClock] = None
        self._rt_to_served = 0  # served - realtime (before offset), refreshed for tai/phc
        self._refreshed = 0
        if spec == "realtime":
            self.clock_id = clock.CLOCK_REALTIME
            self._base = 0
        elif spec == "tai":
            self.clock_id = clock.CLOCK_TAI
            tai_minus_rt = clock.tai_ns() - clock.realtime_ns()
            self._base = -round(tai_minus_rt / 1e9) * 10**9
        elif spec.startswith("phc:"):
            self._phc = clock.PhcClock(spec[4:])
            self.clock_id = self._phc.clock_id
            self._base = 0
        elif spec == "monotonic":
            self.clock_id = clock.CLOCK_MONOTONIC
            self._base = 0
        else:
            raise ValueError(f"unknown clock {spec!r}: use realtime, tai, phc:/dev/ptpN or monotonic")
        self.add_ns = self._base + offset_ns
        self._refresh()

    def _refresh(self) -> None:
        if self.spec == "realtime":
            return
        if self._phc is not None:
            corr = self._phc.sys_offset()
            self._rt_to_served = corr.ref_ns - corr.sys_ns
        else:
            corr = clock.correlate(self.clock_id, clock.CLOCK_REALTIME)
            self._rt_to_served = corr.ref_ns - corr.sys_ns + self._base
        self._refreshed = clock.raw_ns()

    def now_unix(self) -> int:
        return clock.clock_ns(self.clock_id) + self.add_ns

    def from_realtime(self, realtime_ns: int) -> int:
        """A kernel (realtime) stamp on the served timescale."""
        # A stepped wall clock (the reason to serve `monotonic`) moves realtime against it at any
        # moment: map each stamp with a fresh correlation.
        if self.spec == "monotonic" or (self.spec != "realtime"
                                        and clock.raw_ns() - self._refreshed > 1_000_000_000):
            self._refresh()
        return realtime_ns + self._rt_to_served + self.offset_ns

    def close(self) -> None:
        if self._phc is not None:
            self._phc.close()


@dataclass
class ServerConfig:
    """Everything `TsqServer` needs; defaults are a public server's."""

    cert_pem: bytes
    key_pem: bytes
    host: str = "::"
    port: int = 443
    clock: str = "realtime"
    clock_offset_ns: int = 0
    datagrams: bool = True
    legacy_alpn: bool = False          # also accept `tsq/1` (draft §7 wants exactly `tsq`): opt-in
    signer: Optional[wire.Signer] = None
    metadata: Tuple[Tuple[str, str], ...] = ()
    time_source: Optional[wire.TimeSourceInfo] = None
    clock_quality: Optional[wire.ClockQuality] = None
    precision: bool = True
    kernel_stamps: bool = True  # False: user-space stamps, for comparison only
    compensate: bool = True  # add the measured stamp-to-wire residual to T3
    max_connections: int = 10_000
    max_connections_per_source: int = 32
    rate_per_source: float = 200.0  # requests per second per source address (token bucket)
    rate_burst: float = 400.0
    stats_interval_s: float = 0.0  # 0: no statistics lines
    log_addresses: bool = False
    reuse_port: bool = False
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    retry_secret: Optional[bytes] = None  # Retry-token HMAC key (None: random per process)
    token_lifetime_s: float = TOKEN_LIFETIME_S
    batch_io: bool = True                 # recvmmsg/sendmmsg where the platform has them
    fast_path: bool = True                # DATAGRAM exchanges past aioquic's generic path (fast_exchange)

    def policy(self) -> ServerPolicy:
        return ServerPolicy(
            signer=self.signer, metadata=self.metadata, time_source=self.time_source,
            clock_quality=self.clock_quality, precision=self.precision, legacy_alpn=self.legacy_alpn,
            late_stamps=self.kernel_stamps, compensate=self.compensate)


@dataclass
class _Conn:
    quic: QuicConnection
    driver: QuicDriver
    session: ServerSession
    addr: NetworkAddress
    source: str
    cids: Set[bytes] = field(default_factory=set)
    closed: bool = False
    flushed: bool = False     # the last thing done for the packet being handled was a flush
    fast: Optional[FastExchange] = None   # once the handshake is done (tsq.quic.fast_exchange)


class TicketStore:
    """TLS session tickets this server issued, so a reconnecting gateway resumes its session (no
    certificate chain on the wire again: bytes on a metered link). Bounded: the oldest go first;
    each ticket is good once (a resumption takes it out), and expired ones are never resumed."""

    def __init__(self, max_tickets: int) -> None:
        self.max_tickets = max_tickets
        self._tickets: Dict[bytes, SessionTicket] = {}

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > self.max_tickets:
            del self._tickets[next(iter(self._tickets))]

    def pop(self, label: bytes) -> Optional[SessionTicket]:
        ticket = self._tickets.pop(label, None)
        if ticket is None or ticket.not_valid_after < datetime.datetime.now(datetime.timezone.utc):
            return None
        return ticket

    def __len__(self) -> int:
        return len(self._tickets)


class TsqServer:
    """A TSQ server on one UDP socket. `await start()`, then it serves until `close()`."""

    session_class: Type[ServerSession] = ServerSession

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.policy = config.policy()
        self.policy.check()
        self.served = ServedClock(config.clock, config.clock_offset_ns)
        self.quic_config = server_configuration(
            config.cert_pem, config.key_pem, datagrams=config.datagrams,
            legacy_alpn=config.legacy_alpn, idle_timeout=config.idle_timeout_s,
            max_stream_data=STREAM_WINDOW, max_data=CONNECTION_WINDOW,
        )
        self.tokens = RetryTokens(config.retry_secret, config.token_lifetime_s)
        self.stats = ServerStats()
        self.tickets = TicketStore(max(1024, 2 * config.max_connections))
        # By (signed, datagram): each path from stamp to wire has its own minimum; a stream answer
        # can leave faster than the datagram minimum, and T3 must never land after the departure.
        self.residual = stamp_paths()
        self.limiter = RateLimiter(config.rate_per_source, config.rate_burst, 4 * config.max_connections)
        self._conns: Dict[bytes, _Conn] = {}
        self._per_source: Dict[str, int] = {}
        self._pending_tx: Dict[int, Tuple[_Conn, bytes, int, StampPath]] = {}
        self._touched: Dict[int, _Conn] = {}
        self._drain_due = False   # an answer's TX stamp is waiting to be read (batching)
        self._endpoint: Optional[UdpEndpoint] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stats_task: Optional[asyncio.Task[None]] = None
        self.address: Tuple[Any, ...] = ()
        self.capabilities = compat.capabilities()

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self, sock: Optional[socket.socket] = None) -> None:
        """Bind (or adopt `sock`) and start serving on the running loop."""
        self._loop = asyncio.get_running_loop()
        if sock is None:
            sock = open_udp_socket(self.config.host, self.config.port, reuse_port=self.config.reuse_port)
        self._endpoint = UdpEndpoint(
            sock, self._on_datagram, kernel_stamps=self.config.kernel_stamps,
            on_tx_stamp=self._on_tx_stamp, on_error=self._on_socket_error,
            batch=self.config.batch_io, on_batch_done=self._flush_touched,
        )
        self.address = sock.getsockname()
        if self.config.stats_interval_s > 0:
            self._stats_task = asyncio.ensure_future(self._stats_loop())

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connection_count(self) -> int:
        return len({id(c) for c in self._conns.values()})

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE is sent) and the socket."""
        for conn in list({id(c): c for c in self._conns.values()}.values()):
            conn.quic.close(reason_phrase="server shutting down")
            conn.driver.flush()
            self._forget(conn)
        if self._stats_task is not None:
            self._stats_task.cancel()
        if self._endpoint is not None:
            self._endpoint.close()
        self.served.close()

    # ---------------------------------------------------------------------------- statistics
    async def _stats_loop(self) -> None:
        last = self.stats.snapshot()
        while True:
            await asyncio.sleep(self.config.stats_interval_s)
            now = self.stats.snapshot()
            delta = {k: now[k] - last[k] for k in now}
            last = now
            log.info("%s", self.stats_line(delta))

    def stats_line(self, delta: Dict[str, int]) -> str:
        """One line of interval statistics; client addresses only with log_addresses."""
        parts = [f"connections={self.connection_count}"]
        parts += [f"{k}={v}" for k, v in delta.items()]
        parts.append(f"t3_residual_ns={self.residual[(False, True)].estimate_ns}")
        if self.config.log_addresses:
            parts.append("sources=" + ",".join(sorted(s for s, n in self._per_source.items() if n)))
        return "stats " + " ".join(parts)

    # ---------------------------------------------------------------------------- packets in
    def _on_socket_error(self, exc: OSError) -> None:
        log.debug("socket error: %s", exc)

    def _on_datagram(self, data: bytes, addr: Address, rx_raw: int, rx_realtime: Optional[int]) -> None:
        try:
            self._dispatch(data, addr, rx_realtime)
        except Exception:  # one bad packet must never stop the server
            self.stats.handler_failures += 1
            log.exception("failure handling a datagram")

    def _dispatch(self, data: bytes, addr: Address, rx_realtime: Optional[int]) -> None:
        assert self._endpoint is not None and self._loop is not None
        if rx_realtime is None:
            rx_realtime = clock.realtime_ns()  # user-space stamp: the straightforward approach
        conn = self._conns.get(data[1:1 + self.quic_config.connection_id_length]) if data else None
        if conn is None or data[0] & 0x80:  # long header (or unknown short-header CID): parse it
            conn = self._route_long(data, addr)
            if conn is None:
                return
        conn.addr = addr
        conn.driver.addr = addr
        conn.flushed = False
        now = self._loop.time()
        carried = conn.fast.receive(data, addr, now) if conn.fast is not None else None
        t2_unix = self.served.from_realtime(rx_realtime)
        if carried is None:
            conn.quic.receive_datagram(data, addr, now=now)
        else:
            self.stats.fast_received += 1
            for message in carried:  # what aioquic would have queued as DatagramFrameReceived
                self._act(conn, conn.session.datagram_received(message, t2_unix, now))
        self._process_events(conn, t2_unix)
        if conn.closed or conn.flushed:  # an answer's flush took everything (its ACK included)
            return
        if carried is not None and conn.fast is not None and conn.fast.nothing_to_send():
            conn.driver.rearm()  # an ACK-only packet: no flush, but the loss timer has moved
            return
        if self._endpoint.batching:
            self._touched[id(conn)] = conn  # flushed once at the end of the receive batch
        else:
            conn.driver.flush()

    def _flush_touched(self) -> None:
        touched, self._touched = self._touched, {}
        for conn in touched.values():
            if not conn.closed:
                conn.driver.flush()
        if self._drain_due and self._endpoint is not None:
            self._drain_due = False
            self._endpoint.drain_tx_stamps()

    def _route_long(self, data: bytes, addr: Address) -> Optional[_Conn]:
        """The connection a long-header datagram belongs to; a new one only for a validated
        Initial. Everything else creates no state (docs/quic.md, "On the open internet")."""
        assert self._endpoint is not None
        header = compat.parse_header(data, self.quic_config.connection_id_length)
        if header is None:
            self.stats.unvalidated_dropped += 1
            return None
        versions = self.quic_config.supported_versions
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION and header.version is not None
                and header.version not in versions):
            if len(data) >= _MIN_DATAGRAM_FOR_NEW:
                self._endpoint.send(
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid, destination_cid=header.source_cid,
                        supported_versions=versions,
                    ),
                    addr,
                )
            return None
        conn = self._conns.get(header.destination_cid)
        if conn is not None:
            return conn
        if header.packet_type != QuicPacketType.INITIAL or len(data) < _MIN_DATAGRAM_FOR_NEW:
            self.stats.unvalidated_dropped += 1
            return None
        return self._admit(data, header.version or 1, header.destination_cid, header.source_cid,
                           header.token, addr)

    def _admit(self, data: bytes, version: int, dcid: bytes, scid: bytes, token: bytes,
               addr: Address) -> Optional[_Conn]:
        """Retry, refuse or accept a client Initial for an unknown connection ID."""
        assert self._endpoint is not None and self._loop is not None
        now = self._loop.time()
        if not token or not self.tokens.is_ours(token):
            retry_scid = os.urandom(self.quic_config.connection_id_length)
            self._endpoint.send(encode_quic_retry(
                version=version, source_cid=retry_scid, destination_cid=scid, original_destination_cid=dcid,
                retry_token=self.tokens.issue(addr, dcid, retry_scid, now)), addr)
            self.stats.retries_sent += 1
            return None
        verdict = self.tokens.check(token, addr, dcid, now)
        if not verdict.valid:
            # RFC 9000 §8.1.3: a client that echoed a Retry token accepts no second Retry: tell it.
            self.stats.tokens_invalid += 1
            self._close_stateless(version, dcid, scid, QuicErrorCode.INVALID_TOKEN, addr)
            return None
        if not compat.initial_decrypts(data, self.quic_config.connection_id_length):
            self.stats.unvalidated_dropped += 1
            return None
        self.stats.validated += 1
        source = str(addr[0])
        if (self.connection_count >= self.config.max_connections
                or self._per_source.get(source, 0) >= self.config.max_connections_per_source):
            self.stats.connections_refused += 1
            self._close_stateless(version, dcid, scid, QuicErrorCode.CONNECTION_REFUSED, addr, "server busy")
            return None
        assert verdict.odcid is not None
        return self._new_connection(addr, verdict.odcid, dcid)

    def _close_stateless(self, version: int, dcid: bytes, scid: bytes, code: int, addr: Address,
                         reason: str = "") -> None:
        assert self._endpoint is not None
        packet = compat.stateless_close(version, dcid, scid, code, reason)
        if packet is not None:
            self._endpoint.send(packet, addr)

    def _new_connection(self, addr: Address, original_cid: bytes, retry_cid: bytes) -> _Conn:
        assert self._endpoint is not None
        source = str(addr[0])
        quic = compat.ServerConnection(configuration=self.quic_config,
                                       original_destination_connection_id=original_cid,
                                       retry_source_connection_id=retry_cid,
                                       session_ticket_fetcher=self.tickets.pop,
                                       session_ticket_handler=self.tickets.add)
        compat.bound_connection(quic, max_streams_bidi=MAX_STREAMS)
        session = self.session_class(self.policy, self.stats, self.residual, source, self.limiter)
        holder: List[_Conn] = []

        def on_timer() -> None:
            if holder:
                self._process_events(holder[0], self.served.from_realtime(clock.realtime_ns()))

        driver = QuicDriver(quic, self._endpoint, on_timer, addr)
        conn = _Conn(quic=quic, driver=driver, session=session, addr=addr, source=source)
        holder.append(conn)
        conn.cids.update((quic.host_cid, retry_cid))
        self._conns[quic.host_cid] = conn
        self._conns[retry_cid] = conn
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self.stats.connections_opened += 1
        return conn

    def _forget(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.fast = None
        for cid in conn.cids:
            if self._conns.get(cid) is conn:
                del self._conns[cid]
        conn.cids.clear()
        self._per_source[conn.source] = self._per_source.get(conn.source, 1) - 1
        if self._per_source[conn.source] <= 0:
            self._per_source.pop(conn.source, None)
        conn.driver.close()
        for key in [k for k, v in self._pending_tx.items() if v[0] is conn]:
            del self._pending_tx[key]
        # aioquic's objects point at each other and at the connection: without this a finished
        # connection waits for a full garbage collection (tests/quic/test_open_internet.py).
        compat.release(conn.quic)

    def _process_events(self, conn: _Conn, t2_unix: int) -> None:
        """Feed the connection's events to its session; act on what the session asks for."""
        assert self._loop is not None
        session = conn.session
        while not conn.closed:
            event = conn.quic.next_event()
            if event is None:
                break
            actions: List[Action] = []
            if isinstance(event, events.DatagramFrameReceived):
                actions = session.datagram_received(event.data, t2_unix, self._loop.time())
            elif isinstance(event, events.StreamDataReceived):
                actions = session.stream_data(event.stream_id, event.data, event.end_stream, t2_unix)
            elif isinstance(event, events.HandshakeCompleted):
                compat.trim_after_handshake(conn.quic)
                if self.config.fast_path and fast_exchange.supported(conn.quic):
                    conn.fast = FastExchange(conn.quic)
                actions = session.handshake_completed(event.alpn_protocol)
            elif isinstance(event, events.ConnectionIdIssued):
                conn.cids.add(event.connection_id)
                self._conns[event.connection_id] = conn
            elif isinstance(event, events.ConnectionIdRetired):
                conn.cids.discard(event.connection_id)
                if self._conns.get(event.connection_id) is conn:
                    del self._conns[event.connection_id]
            elif isinstance(event, events.StreamReset):
                session.stream_reset(event.stream_id)
            elif isinstance(event, events.ConnectionTerminated):
                if event.error_code not in (QuicErrorCode.NO_ERROR, QuicErrorCode.INTERNAL_ERROR,
                                            QUIC_APP_REFUSED):  # INTERNAL_ERROR: aioquic's idle timeout
                    self.stats.closed_by_error += 1
                self._forget(conn)
            self._act(conn, actions)
        if not conn.closed:
            self._act(conn, session.packet_done(self._loop.time()))

    # ---------------------------------------------------------------------------- actions out
    def _act(self, conn: _Conn, actions: List[Action]) -> None:
        for action in actions:
            conn.flushed = False
            try:
                if isinstance(action, Answer):
                    self._answer(conn, action)
                elif isinstance(action, SendError):
                    conn.quic.send_stream_data(action.stream_id, action.payload, end_stream=True)
                elif isinstance(action, StopStream):
                    conn.quic.stop_stream(action.stream_id, action.error_code)
                elif isinstance(action, CloseConnection):
                    conn.quic.close(error_code=action.error_code, reason_phrase=action.reason)
            except Exception:  # a bug here answers one request badly; it never stops the server
                self.stats.handler_failures += 1
                log.exception("request handler failed")

    def _answer(self, conn: _Conn, plan: Answer) -> None:
        builder = plan.builder
        comp = plan.compensation_ns
        add_ns = self.served.add_ns + comp
        # Stamp now (the fallback, and the value a signature covers); re-stamp in the packet later.
        first = clock.stamp_ntp64(builder.buffer, builder.send_ts_offset, self.served.clock_id, add_ns)
        payload = builder.finish()
        needle = bytes(builder.buffer[: builder.send_ts_offset])

        def stamp(buf: bytearray, offset: int) -> int:
            return clock.stamp_ntp64(buf, offset, self.served.clock_id, add_ns) - comp

        fast = None
        if conn.fast is not None and plan.stream_id is None:
            fast = conn.fast.send(payload, conn.driver.now(), builder.send_ts_offset,
                                  stamp if plan.late else None)
        if fast is not None:
            self.stats.fast_answers += 1
            flushed: Optional[Flushed] = conn.driver.send_built(fast[0])
            stamped = fast[1]
        else:
            stamper = conn.driver.stamper
            stamper.arm(needle, builder.send_ts_offset, stamp if plan.late else None)
            if plan.stream_id is None:
                conn.quic.send_datagram_frame(payload)
            else:
                conn.quic.send_stream_data(plan.stream_id, payload, end_stream=True)
            flushed = conn.driver.flush(marked=True)
            stamped = stamper.stamped_realtime_ns
            stamper.disarm()
        conn.flushed = True
        if flushed is not None and flushed.found and flushed.tx_key is not None:
            if stamped is None:
                stamped = first - comp  # T3 as first stamped (signed, or no late hook)
            self._pending_tx[flushed.tx_key] = (conn, plan.nonce, stamped, plan.path)
            if len(self._pending_tx) > 1024:
                self._pending_tx.clear()
            assert self._endpoint is not None
            if self._endpoint.batching:
                self._drain_due = True   # once at the end of the receive batch (`_flush_touched`)
            else:
                self._endpoint.drain_tx_stamps()

    def _on_tx_stamp(self, key: int, tx_realtime: int) -> None:
        entry = self._pending_tx.pop(key, None)
        if entry is None:
            return
        conn, nonce, stamped_unix, path = entry
        if not conn.closed:
            conn.session.response_sent(nonce, path, stamped_unix, self.served.from_realtime(tx_realtime))


class ServerThread:
    """A `TsqServer` on its own event loop in a background thread (tests, benchmarks, demos).

        with ServerThread(config) as srv:
            ... connect to 127.0.0.1:srv.port ...
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server: Optional[TsqServer] = None
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="tsq-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = TsqServer(self.config)
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("server thread did not start")
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def call(self, fn: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Run `fn` on the server's loop and return its result."""
        done = concurrent.futures.Future()  # type: concurrent.futures.Future[Any]

        def wrapper() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(wrapper)
        return done.result(timeout_s)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self.server is not None:
            self.call(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_pem_pair(cert_path: str, key_path: str) -> Tuple[bytes, bytes]:
    with open(cert_path, "rb") as fh:
        cert = fh.read()
    with open(key_path, "rb") as fh:
        key = fh.read()
    return cert, key


__all__ = [
    "ERR_RATE_LIMITED",
    "ServedClock",
    "ServerConfig",
    "ServerStats",
    "ServerThread",
    "TsqServer",
    "load_pem_pair",
]
