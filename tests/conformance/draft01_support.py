"""Shared parts of the draft-01 conformance suite (the clause table is in test_draft01.py).

- `ScriptedThread(config, script)`: a real `TsqServer` in a `ServerThread` whose sessions are
  `ScriptedSession`s (a `tsq.session.server.ServerSession` subclass set as the server's
  `session_class`): `script(ctx)` returns the `Reply`s to send instead of the honest answer
  (crafted bytes, later, without FIN, as DATAGRAM frames), or None for the honest answer.
- `Probe` / `open_probe`: an independent raw QUIC client on aioquic's own asyncio API that sends
  arbitrary bytes and records every byte, FIN and DATAGRAM that comes back, so server rules are
  checked on the wire, not through our client.
- `ClientHarness`: a sans-IO `ClientSession` on made-up clocks with an honest peer at hand, for the
  client rules.
- `tlvs` / `tlv`: split and build TLVs independently of tsq.wire.

conftest.py wraps these in fixtures and puts this directory on sys.path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tsq import wire
from tsq.auth import Ed25519Signer, HmacSigner, Verifier
from tsq.ntp import unix_ns_to_ntp64
from tsq.quic.server import ServerConfig, ServerThread, TsqServer, load_pem_pair
from tsq.quic.trust import DATAGRAM_FRAME_SIZE
from tsq.session.client import (
    ClientOptions,
    ClientSession,
    Discarded,
    Instant,
    JobDone,
    ModeFallback,
    Outgoing,
)
from tsq.session.server import ServerSession
from tsq.testing.certs import TestPki

T = TypeVar("T")

# Every QUIC test is bounded; a hang fails instead of eating the suite's budget.
TEST_BOUND_S = 30.0


def run(coro: Awaitable[T], bound_s: float = TEST_BOUND_S) -> T:
    return asyncio.run(asyncio.wait_for(coro, bound_s))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ servers
@dataclass
class Reply:
    """One scripted send: `make(t3_ntp)` bytes `delay_s` after the request, on the request's stream
    (FIN after it unless `fin=False`) or, with `datagram=True` or for a datagram request, as a
    DATAGRAM frame. `t3_ntp` is the served clock when the reply leaves."""

    make: Callable[[int], bytes]
    delay_s: float = 0.0
    fin: bool = True
    datagram: Optional[bool] = None


@dataclass
class Ctx:
    """What a script knows about the request it answers."""

    req: wire.Request
    data: bytes                      # the request's bytes as received
    stream_id: Optional[int]         # None: it came in a DATAGRAM frame
    number: int                      # 1 for the connection's first request (the client's warm-up)
    t2: int                          # ntp64, the receive stamp the server would send
    builder: wire.ResponseBuilder    # the honest answer, T3 not yet stamped
    session: ScriptedSession

    def honest(self, t3: int) -> bytes:
        """The server's own answer to this request with T3 = `t3`."""
        off = self.builder.send_ts_offset
        self.builder.buffer[off:off + 8] = t3.to_bytes(8, "big")
        return self.builder.finish()

    def reply(self, make: Callable[[int], bytes], **kw: Any) -> Reply:
        return Reply(make, **kw)


@dataclass(frozen=True)
class Script:
    """The action a ScriptedSession returns instead of an `Answer`; ScriptedServer carries it out."""

    stream_id: Optional[int]
    replies: Sequence[Reply]


ScriptFn = Callable[[Ctx], Optional[Sequence[Reply]]]


class ScriptedSession(ServerSession):
    """A misbehaving server session: `script(ctx)` decides what each decoded request gets."""

    script: ScriptFn = staticmethod(lambda ctx: None)  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = 0
        self.sent: List[bytes] = []       # what the script sent on this connection, in order

    def plan(self, req: wire.Request, request_size: int, t2_unix: int, stream_id: Optional[int]) -> Any:
        honest = super().plan(req, request_size, t2_unix, stream_id)
        self.requests += 1
        ctx = Ctx(req, b"", stream_id, self.requests, unix_ns_to_ntp64(t2_unix), honest.builder, self)
        replies = type(self).script(ctx)
        if replies is None:
            return honest
        return Script(stream_id, list(replies))


class ScriptedServer(TsqServer):
    """TsqServer that also carries out `Script` actions (crafted bytes, delays, FIN held back)."""

    def _act(self, conn: Any, actions: List[Any]) -> None:
        for action in actions:
            if not isinstance(action, Script):
                super()._act(conn, [action])
                continue
            for reply in action.replies:
                if reply.delay_s <= 0:
                    self._send_reply(conn, action.stream_id, reply)
                else:
                    assert self._loop is not None
                    self._loop.call_later(reply.delay_s, self._send_reply, conn, action.stream_id, reply)

    def _send_reply(self, conn: Any, stream_id: Optional[int], reply: Reply) -> None:
        if conn.closed:
            return
        data = reply.make(unix_ns_to_ntp64(self.served.now_unix()))
        conn.session.sent.append(data)
        if reply.datagram or (reply.datagram is None and stream_id is None):
            conn.quic.send_datagram_frame(data)
        else:
            assert stream_id is not None, "a datagram request has no stream to answer on"
            conn.quic.send_stream_data(stream_id, data, end_stream=reply.fin)
        conn.driver.flush()


class ScriptedThread(ServerThread):
    """A ServerThread whose server is a ScriptedServer with sessions that follow `script`."""

    def __init__(self, config: ServerConfig, script: Optional[ScriptFn]) -> None:
        super().__init__(config)
        self.session_class = type("Scripted", (ScriptedSession,), {"script": staticmethod(script)}) \
            if script is not None else ServerSession

    def start(self, timeout_s: float = 10.0) -> ScriptedThread:
        super().start(timeout_s)

        def become_scripted() -> None:
            assert self.server is not None
            self.server.__class__ = ScriptedServer   # the same server, now also running Scripts
            self.server.session_class = self.session_class

        self.call(become_scripted)   # before any client can connect
        return self

    @property
    def stats(self) -> Dict[str, int]:
        assert self.server is not None
        return dict(self.call(self.server.stats.snapshot))


def server_config(pki: TestPki, **kw: Any) -> ServerConfig:
    cert, key = load_pem_pair(pki.server_cert, pki.server_key)
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("port", 0)
    kw.setdefault("stats_interval_s", 0.0)
    # T3 as stamped, never after the real departure: the measured stamp-to-wire compensation is an
    # estimate that lands a few µs late now and then on a loaded loopback (one CI run: a warm-up
    # with a -5 µs round trip), and its §6.6 discard was counted beside the misbehaviour under test.
    kw.setdefault("compensate", False)
    return ServerConfig(cert_pem=cert, key_pem=key, **kw)


# ------------------------------------------------------------------------------------ raw probe
class Probe(QuicConnectionProtocol):
    """A raw QUIC client: sends any bytes, records every answer byte, FIN and DATAGRAM."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alpn: Optional[str] = None
        self.streams: Dict[int, bytearray] = {}
        self.fin: Dict[int, float] = {}
        self.resets: Dict[int, int] = {}
        self.datagrams: List[bytes] = []
        self.terminated: Optional[ConnectionTerminated] = None
        self._changed = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.alpn = event.alpn_protocol
        elif isinstance(event, StreamDataReceived):
            self.streams.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.fin[event.stream_id] = asyncio.get_running_loop().time()
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams.append(bytes(event.data))
        elif isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `predicate()` holds (True) or `timeout_s` passes (False)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while not predicate():
            left = end - loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def send_stream(self, data: bytes, fin: bool = True) -> int:
        sid = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(sid, data, end_stream=fin)
        self.transmit()
        return sid

    def send_datagram(self, data: bytes) -> None:
        self._quic.send_datagram_frame(data)
        self.transmit()

    async def ask_stream(self, data: bytes, timeout_s: float = 5.0, fin: bool = True) -> bytes:
        """Send `data` on a new stream; the whole answer once the server's FIN came."""
        sid = self.send_stream(data, fin)
        assert await self.until(lambda: sid in self.fin or sid in self.resets, timeout_s), \
            f"no FIN on stream {sid} within {timeout_s} s"
        return bytes(self.streams.get(sid, b""))

    async def ask_datagram(self, data: bytes, timeout_s: float = 5.0) -> bytes:
        """Send `data` as a DATAGRAM frame; the next DATAGRAM that comes back."""
        before = len(self.datagrams)
        self.send_datagram(data)
        assert await self.until(lambda: len(self.datagrams) > before, timeout_s), "no DATAGRAM answer"
        return self.datagrams[before]

    async def datagrams_after(self, data: bytes, window_s: float = 0.3) -> List[bytes]:
        """Send `data` as a DATAGRAM frame; every DATAGRAM that comes back within `window_s`."""
        before = len(self.datagrams)
        self.send_datagram(data)
        await asyncio.sleep(window_s)
        return self.datagrams[before:]



@contextlib.asynccontextmanager
async def open_probe(pki: TestPki, port: int, alpn: Optional[Sequence[str]] = ("tsq",),
                     datagrams: bool = True) -> AsyncIterator[Probe]:
    """A connected Probe (ConnectionError when the handshake fails)."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=list(alpn) if alpn is not None else None,
                            server_name="localhost",
                            max_datagram_frame_size=DATAGRAM_FRAME_SIZE if datagrams else None)
    cfg.load_verify_locations(cafile=pki.ca_cert)
    async with connect("127.0.0.1", port, configuration=cfg, create_protocol=Probe) as proto:
        assert isinstance(proto, Probe)
        yield proto


@contextlib.asynccontextmanager
async def aioquic_server(pki: TestPki, alpn: Optional[Sequence[str]]) -> AsyncIterator[int]:
    """A bare aioquic server (not ours) that completes handshakes offering `alpn`; yields its port."""
    cfg = QuicConfiguration(is_client=False, alpn_protocols=list(alpn) if alpn is not None else None)
    cfg.load_cert_chain(pki.server_cert, pki.server_key)
    server = await serve("127.0.0.1", 0, configuration=cfg)
    transport: Any = getattr(server, "_transport", None)
    assert transport is not None
    try:
        yield int(transport.get_extra_info("sockname")[1])
    finally:
        server.close()


# ------------------------------------------------------------------------------------ wire helpers
def tlvs(data: bytes) -> List[Tuple[int, bytes]]:
    """Split a message into (type, value) pairs, independently of tsq.wire (AssertionError if ragged)."""
    out = []
    pos = 0
    while pos < len(data):
        assert pos + 2 <= len(data), f"truncated TLV header at {pos}"
        size = data[pos + 1]
        assert pos + 2 + size <= len(data), f"TLV at {pos} overruns the message"
        out.append((data[pos], data[pos + 2:pos + 2 + size]))
        pos += 2 + size
    return out


def tlv(tlv_type: int, value: bytes = b"") -> bytes:
    return bytes((tlv_type, len(value))) + value



# ------------------------------------------------------------------------------------ sans-IO client
SERVER_NAME = "time.test:443"
REAL_MINUS_RAW = 1_750_000_000 * 10**9   # the made-up realtime clock is raw + this


@dataclass
class Sent:
    """A request the session sent: its key, mode, bytes and the decoded request."""

    key: int
    mode: str
    data: bytes
    req: wire.Request
    t1_raw: int


@dataclass
class ClientHarness:
    """A `ClientSession` after a handshake, on made-up clocks (raw ns; realtime = raw + constant),
    with an honest server's answers at hand. Times advance only when the test says so."""

    options: Dict[str, Any]
    alpn: Optional[str] = "tsq"
    peer_datagrams: bool = True
    raw: int = 5 * 10**12
    done: Dict[int, JobDone] = field(default_factory=dict)
    discards: List[str] = field(default_factory=list)
    fallbacks: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.options.setdefault("name", SERVER_NAME)
        self.session = ClientSession(ClientOptions(**self.options))
        self.session.handshake_completed(self.now(), self.alpn, self.peer_datagrams)
        self.session.warmed_up = True   # the warm-up exchange is the edge's business, not these rules'

    def now(self) -> Instant:
        return Instant(self.raw, self.raw + REAL_MINUS_RAW)

    def advance(self, ns: int) -> None:
        self.raw += ns

    # -- requests ---------------------------------------------------------------------------
    def start(self, mode: str = "stream", kind: str = "exchange") -> int:
        start = self.session.start_sample if kind == "sample" else self.session.start_exchange
        return start(self.now(), mode)

    def sent(self) -> Sent:
        """The one request the session wants sent now (it leaves at the current raw time)."""
        out = [o for o in self.session.take_outgoing() if isinstance(o, Outgoing)]
        assert len(out) == 1, out
        o = out[0]
        self.session.sent(o.key, self.raw)
        return Sent(o.key, o.mode, o.data, wire.decode_request(o.data), self.raw)

    # -- answers ----------------------------------------------------------------------------
    def t2_ntp(self, sent: Sent, after_ns: int = 40_000) -> int:
        return unix_ns_to_ntp64(sent.t1_raw + after_ns + REAL_MINUS_RAW)

    def honest(self, sent: Sent, *, signer: Optional[wire.Signer] = None, precision: bool = True,
               t2: Optional[int] = None, t3: Optional[int] = None, **builder_kw: Any) -> bytes:
        """What an honest server answers to `sent` (T2 40 µs after T1, T3 5 µs later)."""
        req = sent.req
        t2 = self.t2_ntp(sent) if t2 is None else t2
        if not precision:
            req = wire.Request(nonce=req.nonce, signature_request=req.signature_request,
                               metadata_query=req.metadata_query)
        b = wire.ResponseBuilder(req, t2, signer=signer if req.signature_request else None,
                                 pad_to=len(sent.data) if req.precision else None, **builder_kw)
        t3 = t2 + (5_000 << 32) // 10**9 if t3 is None else t3
        b.buffer[b.send_ts_offset:b.send_ts_offset + 8] = t3.to_bytes(8, "big")
        return b.finish()

    def stream(self, sent: Sent, *chunks: bytes, fin: bool = True, gap_ns: int = 100_000) -> None:
        """Deliver `chunks` on `sent`'s stream, one packet each `gap_ns` apart (FIN with the last)."""
        for i, chunk in enumerate(chunks):
            self.advance(gap_ns)
            last = i == len(chunks) - 1
            self.session.stream_data(sent.key, chunk, last and fin, self.raw, True)
            self.session.packet_done(self.now())
        self._drain()

    def reply(self, sent: Sent, data: bytes) -> None:
        """Deliver `data` as the whole answer to `sent`, on its own transport (FIN on a stream)."""
        if sent.mode == "stream":
            self.stream(sent, data)
        else:
            self.datagram(data)

    def datagram(self, payload: bytes, gap_ns: int = 100_000) -> None:
        self.advance(gap_ns)
        self.session.packet_received(self.raw)
        self.session.datagram_received(self.now(), payload, self.raw, True)
        self.session.packet_done(self.now())
        self._drain()

    def expire(self) -> None:
        """Let every pending request time out."""
        deadline = self.session.next_deadline()
        if deadline is not None:
            self.raw = max(self.raw, deadline)
            self.session.handle_timer(self.now())
        self._drain()

    def _drain(self) -> None:
        while True:
            ev = self.session.next_event()
            if ev is None:
                return
            if isinstance(ev, JobDone):
                self.done[ev.job] = ev
            elif isinstance(ev, Discarded):
                self.discards.append(ev.reason)
            elif isinstance(ev, ModeFallback):
                self.fallbacks.append(ev.reason)

    def result(self, job: int) -> JobDone:
        self._drain()
        assert job in self.done, f"job {job} has not ended"
        return self.done[job]




# ------------------------------------------------------------------------------------ signatures
KEY_ID = 0x01020304
ED25519_SEED = bytes(range(32))
HMAC_SECRET = bytes(range(100, 132))
SIGNER_KINDS = ("ed25519", "hmac")


def make_signer(kind: str, key_id: int = KEY_ID) -> wire.Signer:
    return Ed25519Signer(key_id, ED25519_SEED) if kind == "ed25519" else HmacSigner(key_id, HMAC_SECRET)


def make_verifier(kind: str, key_id: int = KEY_ID) -> Verifier:
    if kind == "ed25519":
        return Verifier({key_id: Ed25519PrivateKey.from_private_bytes(ED25519_SEED).public_key()})
    return Verifier({key_id: HMAC_SECRET})


def signature_at(message: bytes) -> Tuple[int, bytes]:
    """(offset of the last TLV, its value); the last TLV must be a Signature Block."""
    pos = 0
    last = -1
    while pos < len(message):
        last = pos
        pos += 2 + message[pos + 1]
    assert pos == len(message) and last >= 0 and message[last] == wire.SIGNATURE, "not signed last"
    return last, message[last + 2:]


def verify_independently(kind: str, signed: bytes, block: bytes) -> bool:
    """Check a Signature Block value over `signed` with `cryptography`/`hmac` directly (draft §8
    layout: algorithm 1 B, key id 4 B, signature length 2 B, signature), not with tsq.auth."""
    algorithm, key_id, length = block[0], int.from_bytes(block[1:5], "big"), int.from_bytes(block[5:7], "big")
    sig = block[7:]
    if key_id != KEY_ID or length != len(sig):
        return False
    if kind == "ed25519":
        if algorithm != 1:
            return False
        try:
            Ed25519PrivateKey.from_private_bytes(ED25519_SEED).public_key().verify(sig, signed)
        except InvalidSignature:
            return False
        return True
    return algorithm == 2 and hmac.compare_digest(hmac.new(HMAC_SECRET, signed, hashlib.sha256).digest(), sig)
