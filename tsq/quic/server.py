"""The TSQ server: aioquic's sans-IO `QuicConnection` on our own timestamped UDP socket.

Per request: T2 is the kernel RX stamp of the datagram that carried it, mapped onto the served
timescale; T3 is written into the plaintext of the packet that carries the response right before
aioquic encrypts it (`PacketStamper`), plus the server's measured stamp-to-wire residual (median of
recent kernel TX stamp minus T3 stamp). Stream mode and datagram mode share one port. Malformed
requests get an Error TLV on streams and are dropped silently on datagrams; any exception in the
handler is contained the same way and never stops the loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from tsq import clock, wire
from tsq.auth import Signer
from tsq.quic.transport import (
    XLEAVE_REQUEST_KEY,
    XLEAVE_RESPONSE_KEY,
    Address,
    PacketStamper,
    UdpEndpoint,
    open_udp_socket,
)
from tsq.quic.trust import ALPN_LEGACY, ALPN_PROTOCOLS, server_configuration

log = logging.getLogger("tsq.server")

MAX_REQUEST_BYTES = 4096  # a TSQ request is a few hundred bytes; more on a stream is abuse
ERR_RATE_LIMITED = 4  # beyond the draft's 1-3; clients treat any Error TLV as a failed exchange
_MIN_DATAGRAM_FOR_NEW = 1200  # RFC 9000 §14.1: Initial datagrams are at least 1200 bytes


class ServedClock:
    """The server's time source: served unix ns = clock(clock_id) + add_ns.

    `realtime`: CLOCK_REALTIME. `tai`: CLOCK_TAI minus the kernel's TAI-UTC offset (whole seconds).
    `phc:/dev/ptpN`: a PTP hardware clock read directly. `offset_ns` is the calibration added to all
    served time (like chrony's `offset`). Kernel packet stamps (realtime) are mapped onto it with
    `from_realtime`.
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
        else:
            raise ValueError(f"unknown clock {spec!r}: use realtime, tai or phc:/dev/ptpN")
        self.add_ns = self._base + offset_ns
        self._refresh()

    def _refresh(self) -> None:
        if self.spec == "realtime":
            return
        if self._phc is not None:
            corr = self._phc.sys_offset()
            self._rt_to_served = corr.ref_ns - corr.sys_ns
        else:
            corr = clock.correlate(clock.CLOCK_TAI, clock.CLOCK_REALTIME)
            self._rt_to_served = corr.ref_ns - corr.sys_ns + self._base
        self._refreshed = clock.raw_ns()

    def now_unix(self) -> int:
        return clock.clock_ns(self.clock_id) + self.add_ns

    def from_realtime(self, realtime_ns: int) -> int:
        """A kernel (realtime) stamp on the served timescale."""
        if self.spec != "realtime" and clock.raw_ns() - self._refreshed > 1_000_000_000:
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
    legacy_alpn: bool = True
    signer: Optional[Signer] = None
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
    idle_timeout_s: float = 300.0


class ResidualEstimator:
    """The minimum of the last `size` stamp-to-wire residuals (kernel TX time minus T3 as stamped)."""

    def __init__(self, size: int = 63, warm: int = 16) -> None:
        self._values: Deque[int] = collections.deque(maxlen=size)
        self._warm = warm
        self.margin_ns = 2_000  # the minimum of 63 is not the minimum of the next one
        self.estimate_ns = 0

    def add(self, residual_ns: int) -> None:
        if not 0 <= residual_ns < 10_000_000:  # a descheduled sender is not the stamp-to-wire path
            return
        self._values.append(residual_ns)
        # The minimum, not the median: T3 must not land after the real departure, or short
        # loopback round trips come out negative (draft §6.6 rejects those). What is left is
        # one-sided (T3 early by residual - minimum); the interleaved report removes it.
        if len(self._values) >= self._warm:  # early samples are slow (cold code): wait
            self.estimate_ns = max(0, min(self._values) - self.margin_ns)


@dataclass
class ServerStats:
    connections_opened: int = 0
    connections_refused: int = 0
    requests_datagram: int = 0
    requests_stream: int = 0
    errors_sent: int = 0
    dropped: int = 0
    rate_limited: int = 0
    handler_failures: int = 0

    def snapshot(self) -> Dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Conn:
    quic: QuicConnection
    addr: NetworkAddress
    source: str
    stamper: PacketStamper
    cids: Set[bytes] = field(default_factory=set)
    timer: Optional[asyncio.TimerHandle] = None
    timer_at: Optional[float] = None
    alpn: Optional[str] = None
    streams: Dict[int, bytearray] = field(default_factory=dict)
    last_tx: Optional[Tuple[bytes, int]] = None  # (nonce, served ns of kernel TX) of last response
    closed: bool = False


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


class TsqServer:
    """A TSQ server on one UDP socket. `await start()`, then it serves until `close()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.served = ServedClock(config.clock, config.clock_offset_ns)
        self.quic_config = server_configuration(
            config.cert_pem, config.key_pem, datagrams=config.datagrams,
            legacy_alpn=config.legacy_alpn, idle_timeout=config.idle_timeout_s,
        )
        self.stats = ServerStats()
        # By (signed, datagram): each path from stamp to wire has its own minimum; a stream answer
        # can leave faster than the datagram minimum, and T3 must never land after the departure.
        self.residual = {(sg, dg): ResidualEstimator() for sg in (False, True) for dg in (False, True)}
        self._conns: Dict[bytes, _Conn] = {}
        self._per_source: Dict[str, int] = collections.defaultdict(int)
        self._buckets: Dict[str, _Bucket] = {}
        self._pending_tx: Dict[int, Tuple[_Conn, bytes, int, Tuple[bool, bool]]] = {}
        self._endpoint: Optional[UdpEndpoint] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stats_task: Optional[asyncio.Task[None]] = None
        self.address: Tuple[Any, ...] = ()

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self, sock: Optional[socket.socket] = None) -> None:
        """Bind (or adopt `sock`) and start serving on the running loop."""
        self._loop = asyncio.get_running_loop()
        if sock is None:
            sock = open_udp_socket(self.config.host, self.config.port, reuse_port=self.config.reuse_port)
        self._endpoint = UdpEndpoint(
            sock, self._on_datagram, kernel_stamps=self.config.kernel_stamps,
            on_tx_stamp=self._on_tx_stamp, on_error=self._on_socket_error,
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
            self._flush(conn)
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
        buf = Buffer(data=data)
        try:
            header = pull_quic_header(buf, host_cid_length=self.quic_config.connection_id_length)
        except ValueError:
            return
        versions = self.quic_config.supported_versions
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION and header.version is not None
                and header.version not in versions):
            self._endpoint.send(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid, destination_cid=header.source_cid,
                    supported_versions=versions,
                ),
                addr,
            )
            return
        conn = self._conns.get(header.destination_cid)
        if conn is None:
            if header.packet_type != QuicPacketType.INITIAL or len(data) < _MIN_DATAGRAM_FOR_NEW:
                return
            conn = self._new_connection(addr, header.destination_cid)
            if conn is None:
                return
        conn.addr = addr
        conn.quic.receive_datagram(data, addr, now=self._loop.time())
        self._process_events(conn, rx_realtime)
        self._flush(conn)

    def _new_connection(self, addr: Address, original_cid: bytes) -> Optional[_Conn]:
        source = str(addr[0])
        if (self.connection_count >= self.config.max_connections
                or self._per_source[source] >= self.config.max_connections_per_source):
            self.stats.connections_refused += 1
            return None
        quic = QuicConnection(configuration=self.quic_config,
                              original_destination_connection_id=original_cid)
        conn = _Conn(quic=quic, addr=addr, source=source, stamper=PacketStamper(quic))
        conn.cids.add(quic.host_cid)
        conn.cids.add(original_cid)
        self._conns[quic.host_cid] = conn
        self._conns[original_cid] = conn
        self._per_source[source] += 1
        self.stats.connections_opened += 1
        return conn

    def _forget(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        for cid in conn.cids:
            if self._conns.get(cid) is conn:
                del self._conns[cid]
        self._per_source[conn.source] -= 1
        if self._per_source[conn.source] <= 0:
            self._per_source.pop(conn.source, None)
        if conn.timer is not None:
            conn.timer.cancel()

    def _process_events(self, conn: _Conn, rx_realtime: int) -> None:
        while True:
            event = conn.quic.next_event()
            if event is None:
                return
            if isinstance(event, events.DatagramFrameReceived):
                self._request(conn, event.data, rx_realtime, stream_id=None)
            elif isinstance(event, events.StreamDataReceived):
                self._stream_data(conn, event, rx_realtime)
            elif isinstance(event, events.HandshakeCompleted):
                conn.alpn = event.alpn_protocol
                if conn.alpn not in ALPN_PROTOCOLS:
                    conn.quic.close(error_code=0x178, reason_phrase="ALPN tsq required")
            elif isinstance(event, events.ConnectionIdIssued):
                conn.cids.add(event.connection_id)
                self._conns[event.connection_id] = conn
            elif isinstance(event, events.ConnectionIdRetired):
                conn.cids.discard(event.connection_id)
                if self._conns.get(event.connection_id) is conn:
                    del self._conns[event.connection_id]
            elif isinstance(event, events.StreamReset):
                conn.streams.pop(event.stream_id, None)
            elif isinstance(event, events.ConnectionTerminated):
                self._forget(conn)

    def _stream_data(self, conn: _Conn, event: events.StreamDataReceived, rx_realtime: int) -> None:
        if event.stream_id % 4 != 0:  # only client-initiated bidirectional streams carry requests
            return
        pending = conn.streams.setdefault(event.stream_id, bytearray())
        pending += event.data
        if len(pending) > MAX_REQUEST_BYTES:
            conn.streams.pop(event.stream_id, None)
            self._send_error(conn, event.stream_id, wire.ERR_MALFORMED, "request too long")
            return
        if event.end_stream:
            data = bytes(conn.streams.pop(event.stream_id))
            self._request(conn, data, rx_realtime, stream_id=event.stream_id)

    # ---------------------------------------------------------------------------- requests
    def _request(self, conn: _Conn, data: bytes, rx_realtime: int, stream_id: Optional[int]) -> None:
        if conn.alpn not in ALPN_PROTOCOLS:
            return
        if stream_id is None:
            self.stats.requests_datagram += 1
        else:
            self.stats.requests_stream += 1
        assert self._loop is not None
        bucket = self._buckets.get(conn.source)
        now = self._loop.time()
        if bucket is None:
            bucket = self._buckets[conn.source] = _Bucket(
                self.config.rate_per_source, self.config.rate_burst, now)
            if len(self._buckets) > 4 * self.config.max_connections:
                self._buckets.clear()  # bounded memory; forgetting a bucket only forgives
        if not bucket.take(now):
            self.stats.rate_limited += 1
            if stream_id is not None:
                self._send_error(conn, stream_id, ERR_RATE_LIMITED, "rate limited")
            return
        try:
            self._answer(conn, data, rx_realtime, stream_id)
        except wire.WireError as exc:
            self._reject(conn, stream_id, wire.ERR_MALFORMED, str(exc))
        except Exception as exc:  # a bug here answers one request badly; it never stops the server
            self.stats.handler_failures += 1
            log.exception("request handler failed")
            self._reject(conn, stream_id, wire.ERR_MALFORMED, f"server error: {type(exc).__name__}")

    def _reject(self, conn: _Conn, stream_id: Optional[int], code: int, reason: str) -> None:
        if stream_id is None:
            self.stats.dropped += 1  # draft §6.6: silent discard in Datagram Mode
        else:
            self._send_error(conn, stream_id, code, reason)

    def _send_error(self, conn: _Conn, stream_id: int, code: int, reason: str) -> None:
        self.stats.errors_sent += 1
        payload = wire.encode_error(code, reason.encode("utf-8")[: wire.MAX_REASON_BYTES].decode(
            "utf-8", "ignore"))
        conn.quic.send_stream_data(stream_id, payload, end_stream=True)

    def build_response(self, conn: _Conn, req: wire.Request, t2_unix: int,
                       request_size: int) -> wire.ResponseBuilder:
        """The response with T3 still zero. Legacy `tsq/1` peers get TLVs 1-3 only."""
        t2 = clock.unix_ns_to_ntp64(t2_unix)
        if conn.alpn == ALPN_LEGACY:
            return wire.ResponseBuilder(wire.Request(nonce=req.nonce), t2)
        cfg = self.config
        metadata: List[Tuple[str, str]] = list(cfg.metadata) if req.metadata_query else []
        if conn.last_tx is not None and (XLEAVE_REQUEST_KEY, "1") in req.metadata:
            nonce, tx_unix = conn.last_tx
            metadata.append((XLEAVE_RESPONSE_KEY,
                             f"{nonce.hex()}:{clock.unix_ns_to_ntp64(tx_unix):016x}"))
        precision = req.precision and cfg.precision
        if req.precision and not cfg.precision:
            req = wire.Request(nonce=req.nonce, signature_request=req.signature_request,
                               metadata_query=req.metadata_query, metadata=req.metadata)
        return wire.ResponseBuilder(
            req, t2,
            clock_quality=cfg.clock_quality, time_source=cfg.time_source, metadata=metadata,
            signer=cfg.signer if req.signature_request else None,
            pad_to=request_size if precision else None,
        )

    def _answer(self, conn: _Conn, data: bytes, rx_realtime: int, stream_id: Optional[int]) -> None:
        req = wire.decode_request(data)
        if stream_id is None and conn.alpn == ALPN_LEGACY:
            raise wire.WireError("datagrams are not part of tsq/1")
        if req.signature_request and self.config.signer is None and conn.alpn != ALPN_LEGACY:
            self._reject(conn, stream_id, wire.ERR_AUTH_REQUIRED, "this server does not sign")
            return
        builder = self.build_response(conn, req, self.served.from_realtime(rx_realtime), len(data))
        signed = req.signature_request and self.config.signer is not None and conn.alpn != ALPN_LEGACY
        path = (bool(signed), stream_id is None)
        comp = self.residual[path].estimate_ns if self.config.compensate else 0
        add_ns = self.served.add_ns + comp
        # Stamp now (the fallback, and the value a signature covers); re-stamp in the packet later.
        first = clock.stamp_ntp64(builder.buffer, builder.send_ts_offset, self.served.clock_id, add_ns)
        payload = builder.finish()
        needle = bytes(builder.buffer[: builder.send_ts_offset])
        late = self.config.kernel_stamps and not signed

        def stamp(buf: bytearray, offset: int) -> int:
            return clock.stamp_ntp64(buf, offset, self.served.clock_id, add_ns) - comp

        conn.stamper.arm(needle, builder.send_ts_offset, stamp if late else None)
        if stream_id is None:
            conn.quic.send_datagram_frame(payload)
        else:
            conn.quic.send_stream_data(stream_id, payload, end_stream=True)
        self._flush(conn, track=(req.nonce, path, first - comp))
        conn.stamper.disarm()

    # ---------------------------------------------------------------------------- packets out
    def _flush(self, conn: _Conn, track: Optional[Tuple[bytes, Tuple[bool, bool], int]] = None) -> None:
        assert self._endpoint is not None and self._loop is not None
        stamper = conn.stamper
        datagrams = conn.quic.datagrams_to_send(now=self._loop.time())
        hit = -1
        if track is not None and stamper.hit_packet >= 0:
            hit = stamper.hit_packet + len(datagrams) - stamper.packets
        stamped = stamper.stamped_realtime_ns
        for index, (payload, addr) in enumerate(datagrams):
            key = self._endpoint.send(payload, addr)
            if index == hit and key is not None and track is not None:
                if stamped is None:
                    stamped = track[2]  # T3 as first stamped (signed or no late hook)
                self._pending_tx[key] = (conn, track[0], stamped, track[1])
        if self._pending_tx:
            self._endpoint.drain_tx_stamps()
            if len(self._pending_tx) > 1024:
                self._pending_tx.clear()
        self._arm_timer(conn)

    def _on_tx_stamp(self, key: int, tx_realtime: int) -> None:
        entry = self._pending_tx.pop(key, None)
        if entry is None:
            return
        conn, nonce, stamped_unix, path = entry
        tx_served = self.served.from_realtime(tx_realtime)
        self.residual[path].add(tx_served - stamped_unix)
        conn.last_tx = (nonce, tx_served)

    def _arm_timer(self, conn: _Conn) -> None:
        assert self._loop is not None
        if conn.closed:
            return
        at = conn.quic.get_timer()
        if at == conn.timer_at and conn.timer is not None:
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.timer_at = at
        if at is not None:
            conn.timer = self._loop.call_at(at, self._on_timer, conn)

    def _on_timer(self, conn: _Conn) -> None:
        assert self._loop is not None
        conn.timer = None
        conn.timer_at = None
        try:
            conn.quic.handle_timer(now=self._loop.time())
            self._process_events(conn, clock.realtime_ns())
            if not conn.closed:
                self._flush(conn)
        except Exception:
            self.stats.handler_failures += 1
            log.exception("timer handling failed")


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
    "XLEAVE_REQUEST_KEY",
    "XLEAVE_RESPONSE_KEY",
    "ServedClock",
    "ServerConfig",
    "ServerStats",
    "ServerThread",
    "TsqServer",
    "load_pem_pair",
]
