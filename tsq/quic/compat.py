"""Every use of aioquic internals, in one place, each with a capability flag and a fallback.

aioquic's public API has no hook for the things TSQ needs beyond it: the plaintext of a 1-RTT
packet right before encryption (the late T3 on the server, and which datagram carried the request on
the client), the peer's certificate after the handshake (SPKI pins), and the peer's
max_datagram_frame_size transport parameter (whether DATAGRAM frames may be sent). The server's
packet-header parser is public (`aioquic.quic.packet`) but needs aioquic's private `Buffer`.

For a server on the open internet (docs/quic.md, "On the open internet"): checking that a client's Initial
decrypts before any connection state exists, a stateless CONNECTION_CLOSE in an Initial packet
(refusal, bad token), flow-control windows that never grow beyond what a TSQ request needs, few
concurrent streams, ACKs that ride on the response instead of an ACK-only packet 1 ms later, and
breaking aioquic's own reference cycles so a finished connection is freed at once.

The server's DATAGRAM fast path, which reads and writes aioquic's per-packet state directly, lives
beside this module in tsq.quic.fast_exchange (its own capability flag, `fast_exchange`).

Each accessor returns None / False when the attribute is not where this version keeps it: the
capability is then off (stamps fall back to before the packet is built, a pin cannot be checked and
the connection is refused, datagrams are not used), and nothing breaks. The version is checked once
at import against the range this project is tested with (`TESTED_AIOQUIC` and pyproject.toml).
`capabilities()` is what `tsq status` and the server's start line report. One canary test per hook
lives in tests/quic/test_compat.py.
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import aioquic
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicHeader, QuicPacketType, pull_quic_header

from tsq.quic import fast_exchange

try:
    from aioquic.quic.crypto import CryptoPair, NoCallback
    from aioquic.quic.packet_builder import QuicPacketBuilder
except ImportError:  # pragma: no cover - no stateless close, no decrypt check: see below
    CryptoPair = None  # type: ignore[assignment,misc]
    NoCallback = None  # type: ignore[assignment]
    QuicPacketBuilder = None  # type: ignore[assignment,misc]

_Buffer: Any
try:
    from aioquic._buffer import Buffer as _Buffer
except ImportError:  # pragma: no cover - an aioquic without it cannot parse headers: no server
    _Buffer = None

log = logging.getLogger("tsq.quic")

TESTED_AIOQUIC = ((1, 2), (1, 8))   # [lowest, first untested) major.minor, as in pyproject.toml

Encrypt = Callable[[bytes, bytes, int], bytes]


def _version(text: str) -> Tuple[int, int]:
    parts = [*text.split("."), "0", "0"][:2]
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)


AIOQUIC_VERSION = str(getattr(aioquic, "__version__", "0"))
VERSION_TESTED = TESTED_AIOQUIC[0] <= _version(AIOQUIC_VERSION) < TESTED_AIOQUIC[1]
if not VERSION_TESTED:
    log.warning("aioquic %s is outside the tested range %d.%d-%d.%d: TSQ's precision hooks may be "
                "off (see `tsq status`)", AIOQUIC_VERSION, *TESTED_AIOQUIC[0], *TESTED_AIOQUIC[1])


# ---------------------------------------------------------------------------------------- hooks
def one_rtt_crypto(quic: QuicConnection) -> Any:
    """The 1-RTT CryptoPair (has `encrypt_packet`), or None before keys exist / if not found."""
    cryptos = getattr(quic, "_cryptos", None)
    pair = cryptos.get(tls.Epoch.ONE_RTT) if isinstance(cryptos, dict) else None
    if pair is None or not callable(getattr(pair, "encrypt_packet", None)):
        return None
    return pair


def peer_certificate(quic: QuicConnection) -> Any:
    """The peer's leaf certificate (cryptography x509) after the handshake, or None."""
    context = getattr(quic, "tls", None)
    return getattr(context, "_peer_certificate", None)


def peer_allows_datagrams(quic: QuicConnection) -> bool:
    """Whether the peer's transport parameters enabled RFC 9221 DATAGRAM frames."""
    return bool(getattr(quic, "_remote_max_datagram_frame_size", None))


def parse_header(data: bytes, host_cid_length: int) -> Optional[QuicHeader]:
    """The QUIC header of a datagram's first packet, or None when it does not parse."""
    if _Buffer is None:  # pragma: no cover
        return None
    try:
        return pull_quic_header(_Buffer(data=data), host_cid_length=host_cid_length)
    except ValueError:
        return None


# ------------------------------------------------------------------------------ open internet
TRANSPORT_CLOSE = 0x1C
PADDING_FRAME = 0x00


def initial_decrypts(data: bytes, host_cid_length: int) -> bool:
    """Whether the datagram's first packet is a client Initial that decrypts with the Initial keys
    of its Destination Connection ID (RFC 9001 §5.2). False when it does not, or cannot be checked
    (then the server creates no state for it)."""
    if _Buffer is None or CryptoPair is None:  # pragma: no cover
        return False
    try:
        buf = _Buffer(data=data)
        header = pull_quic_header(buf, host_cid_length=host_cid_length)
        if header.packet_type != QuicPacketType.INITIAL or header.version is None:
            return False
        crypto = CryptoPair()
        crypto.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
        crypto.decrypt_packet(data[:header.packet_length], buf.tell(), 0)
    except (ValueError, IndexError, KeyError):  # aioquic's CryptoError is a ValueError
        return False
    return True


def stateless_close(version: int, client_dcid: bytes, client_scid: bytes, error_code: int,
                    reason: str = "") -> Optional[bytes]:
    """A server Initial packet with CONNECTION_CLOSE (transport `error_code`), built without any
    connection: the Initial keys come from the client's Destination Connection ID. None when this
    aioquic lacks the pieces (the client then times out instead of being told)."""
    if CryptoPair is None or QuicPacketBuilder is None:  # pragma: no cover
        return None
    try:
        crypto = CryptoPair()
        crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
        builder = QuicPacketBuilder(host_cid=client_dcid, is_client=False, max_datagram_size=1200,
                                    peer_cid=client_scid, version=version)
        builder.start_packet(QuicPacketType.INITIAL, crypto)
        raw = reason.encode("utf-8")[:64]
        buf = builder.start_frame(TRANSPORT_CLOSE, capacity=1 + 3 * 8 + len(raw))
        buf.push_uint_var(error_code)
        buf.push_uint_var(PADDING_FRAME)
        buf.push_uint_var(len(raw))
        buf.push_bytes(raw)
        datagrams, _ = builder.flush()
    except Exception:
        return None
    return bytes(datagrams[0]) if datagrams else None


def close_received(quic: QuicConnection) -> Optional[Tuple[int, str]]:
    """(error code, reason) of a CONNECTION_CLOSE the peer sent, as soon as it is received, or None.

    aioquic reports it as ConnectionTerminated only after the draining period (3 PTO: about 0.6 s
    before any RTT sample), which is how long a refused client would otherwise wait."""
    event = getattr(quic, "_close_event", None)
    state = getattr(getattr(quic, "_state", None), "name", "")
    if event is None or state not in ("DRAINING", "TERMINATED"):
        return None
    return int(event.error_code), str(event.reason_phrase)


def _no_stream_window_growth(builder: Any, space: Any, stream: Any) -> None:
    """Replaces aioquic's `_write_stream_limits`, which doubles a stream's receive window each time
    half of it is used: a TSQ request fits the initial window, so the window never grows (and no
    packet pays for looking at every stream)."""
    return None


@dataclass(frozen=True)
class Bounds:
    """What `bound_connection` could apply (False: this aioquic keeps its own default)."""

    stream_windows: bool
    streams: bool
    ack_now: bool
    connection_ids: bool


ACTIVE_CONNECTION_IDS = 2   # RFC 9000's minimum: one in use, one spare for a path change


class ServerConnection(QuicConnection):
    """aioquic's connection with TSQ's two method overrides (`bound_connection`) on the class.

    Set on each instance instead, they add two entries to every connection's attribute table, which
    then grows (~3 KB a connection). Where this aioquic has no such methods the overrides are never
    called and `bound_connection` reports the bound as not applied."""

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        _no_stream_window_growth(builder, space, stream)

    def _replenish_connection_ids(self) -> None:
        _capped_replenish(self, super()._replenish_connection_ids, ACTIVE_CONNECTION_IDS)


def _capped_replenish(quic: QuicConnection, replenish: Callable[[], None], limit: int) -> None:
    """aioquic's replenish, issuing connection IDs up to `limit` only (see `_cap_connection_ids`)."""
    peer_limit = quic._remote_active_connection_id_limit
    quic._remote_active_connection_id_limit = min(peer_limit, limit)
    try:
        replenish()
    finally:
        quic._remote_active_connection_id_limit = peer_limit


def bound_connection(quic: ServerConnection, *, max_streams_bidi: int, ack_now: bool = True) -> Bounds:
    """Hold a server connection to TSQ's needs before it receives anything.

    - receive windows stay at the configured `max_stream_data` (aioquic doubles them on use);
    - at most `max_streams_bidi` client streams at a time and no unidirectional ones (aioquic: 128
      of each, each with its own window: megabytes of out-of-order data a client may park);
    - `ack_now`: an ack-eliciting packet is acknowledged in the next packet built (aioquic waits
      1 ms, which on a server that answers at once is one ACK-only packet per exchange; the ACK
      rides on the response instead);
    - two connection IDs each way, not eight (`_cap_connection_ids`);
    - the frame-type table shared by every connection, not copied (`_share_frame_handlers`), and
      its event and DATAGRAM queues small (`_SmallQueue`)."""
    windows = callable(getattr(QuicConnection, "_write_stream_limits", None))  # overridden by the class
    bidi: Any = getattr(quic, "_local_max_streams_bidi", None)
    uni: Any = getattr(quic, "_local_max_streams_uni", None)
    streams = all(hasattr(limit, "value") and hasattr(limit, "sent") for limit in (bidi, uni))
    if streams:
        bidi.value = bidi.sent = max_streams_bidi
        uni.value = uni.sent = 0
    ack = ack_now and isinstance(getattr(quic, "_ack_delay", None), float)
    if ack:
        quic._ack_delay = 0.0
    _share_frame_handlers(quic)
    _small_queues(quic, ("_events", "_datagrams_pending"))
    cids = _cap_connection_ids(quic, ACTIVE_CONNECTION_IDS)
    return Bounds(windows, streams, ack, cids)


class _SmallQueue(list):  # type: ignore[type-arg]
    """The deque operations aioquic uses on its per-connection queues (events to hand out,
    DATAGRAM frames to send, path challenges), on a list: those hold zero to a few items between
    two packets, and each deque allocates a 64-slot block (~0.8 KB with the object) up front.
    `popleft` is O(n) for the few n there are; `maxlen` drops the oldest, as a deque's does."""

    __slots__ = ("maxlen",)

    def __init__(self, maxlen: Optional[int] = None) -> None:
        super().__init__()
        self.maxlen = maxlen

    def popleft(self) -> Any:
        return self.pop(0)        # empty: IndexError, as deque.popleft

    def append(self, item: Any) -> None:
        super().append(item)
        if self.maxlen is not None and len(self) > self.maxlen:
            del self[0]


def _small_queues(obj: Any, names: Tuple[str, ...]) -> bool:
    """Replace `obj`'s empty deques called `names` by `_SmallQueue`s with the same maxlen."""
    queues = [getattr(obj, name, None) for name in names]
    if not all(type(q) is collections.deque and not q for q in queues):
        return False
    for name, q in zip(names, queues):
        setattr(obj, name, _SmallQueue(q.maxlen))  # type: ignore[union-attr]
    return True


def _cap_connection_ids(quic: ServerConnection, limit: int) -> bool:
    """Two connection IDs each way instead of aioquic's eight: the peer is asked for no more
    (active_connection_id_limit), and the server issues no more than it needs. Each one costs a
    NEW_CONNECTION_ID frame (~28 B) in the handshake, an object and a table entry per connection;
    a TSQ client changes path only when a NAT rebinds, which keeps the CID."""
    replenish = getattr(QuicConnection, "_replenish_connection_ids", None)
    if not (isinstance(getattr(quic, "_local_active_connection_id_limit", None), int)
            and isinstance(getattr(quic, "_remote_active_connection_id_limit", None), int)
            and callable(replenish)):
        return False
    quic._local_active_connection_id_limit = limit   # the class's replenish issues no more
    return True


# frame type -> (the QuicConnection method handling it, the epochs it may arrive in)
_FrameTable = Dict[int, Tuple[Callable[..., Any], FrozenSet[Any]]]
_SHARED_TABLES: dict[type, _FrameTable] = {}


class _BoundFrameHandlers:
    """aioquic's frame-type table as each connection sees it, from one table per class: a lookup
    binds the handler to the connection then. aioquic builds the table per connection (~30
    bound methods and frozensets of epochs: ~3 KB) and only ever reads it by frame type."""

    __slots__ = ("_quic", "_table")

    def __init__(self, quic: QuicConnection, table: _FrameTable) -> None:
        self._quic = quic
        self._table = table

    def __getitem__(self, frame_type: int) -> Tuple[Any, FrozenSet[Any]]:
        function, epochs = self._table[frame_type]     # an unknown type: KeyError, as the dict's
        return types.MethodType(function, self._quic), epochs


def _share_frame_handlers(quic: QuicConnection) -> bool:
    """Replace the connection's own frame-type table by a `_BoundFrameHandlers` over the table its
    class shares, if the connection's is exactly that table (same methods, equal epochs);
    otherwise keep its own."""
    name = "_QuicConnection__frame_handlers"
    handlers = vars(quic).get(name)
    if not isinstance(handlers, dict):
        return False
    try:
        own = {ft: (entry[0].__func__, entry[1]) for ft, entry in handlers.items()
               if entry[0].__self__ is quic and isinstance(entry[1], frozenset)}
    except (AttributeError, TypeError, IndexError):
        return False
    if len(own) != len(handlers):
        return False
    table = _SHARED_TABLES.setdefault(type(quic), own)
    if table != own:
        return False
    setattr(quic, name, _BoundFrameHandlers(quic, table))
    return True


def _drop_key_log_callbacks(quic: QuicConnection) -> bool:
    """aioquic gives each epoch's keys four callbacks (partials of bound methods) that only write
    to the QUIC logger: without a logger they do nothing, so aioquic's own no-op replaces them."""
    cryptos = getattr(quic, "_cryptos", None)
    if NoCallback is None or getattr(quic, "_quic_logger", True) is not None or not isinstance(cryptos, dict):
        return False
    for pair in cryptos.values():
        for context in (getattr(pair, "recv", None), getattr(pair, "send", None)):
            for attr in ("_setup_cb", "_teardown_cb"):
                if isinstance(getattr(context, attr, None), functools.partial):
                    setattr(context, attr, NoCallback)
    return True


def _discarded_epoch_objects() -> Tuple[Any, ...]:
    """One packet space, key pair and crypto stream for every server connection's discarded
    epochs, or () where this aioquic keeps them elsewhere. Never set up, never written: see
    `_share_discarded_epochs`."""
    try:
        from aioquic.quic.recovery import QuicPacketSpace
        from aioquic.quic.stream import QuicStream
    except ImportError:  # pragma: no cover - a layout we do not know: nothing shared
        return ()
    if CryptoPair is None:  # pragma: no cover
        return ()
    space = QuicPacketSpace()
    space.discarded = True
    return space, CryptoPair(), QuicStream()


_DISCARDED = _discarded_epoch_objects()


def _share_discarded_epochs(quic: QuicConnection) -> bool:
    """Once a server's Initial and Handshake epochs are discarded (their keys torn down, their
    packet spaces out of loss recovery), aioquic still keeps, per connection, a packet space, a key
    pair and a crypto stream for each, plus two Initial key pairs (QUIC v1 and v2) and an unused
    0-RTT pair: ~4 KB of the ~33 KB an idle connection costs (docs/benchmarks.md, "Server load").
    They are replaced by the shared `_DISCARDED` objects, which are only ever read afterwards: a
    late Initial or Handshake packet finds no key (`is_valid()` is False) and is dropped before
    its space is touched, `_discard_epoch` skips a space already `discarded`, and what aioquic
    writes to every crypto stream after a CRYPTO frame (`_push_crypto_data`) is the empty
    scratch buffer `trim_after_handshake` left there (a no-op write)."""
    if not _DISCARDED:
        return False
    space, pair, stream = _DISCARDED
    spaces = getattr(quic, "_spaces", None)
    cryptos = getattr(quic, "_cryptos", None)
    initial = getattr(quic, "_cryptos_initial", None)
    streams = getattr(quic, "_crypto_streams", None)
    loss_spaces = getattr(getattr(quic, "_loss", None), "spaces", None)
    epochs = (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE)
    if not (isinstance(spaces, dict) and isinstance(cryptos, dict) and isinstance(initial, dict)
            and isinstance(streams, dict) and isinstance(loss_spaces, list)
            and all(e in spaces and e in cryptos and e in streams for e in epochs)
            and all(spaces[e].discarded and not cryptos[e].recv.is_valid() and not cryptos[e].send.is_valid()
                    and streams[e].sender.buffer_is_empty for e in epochs)
            and all(not p.recv.is_valid() and not p.send.is_valid() for p in initial.values())):
        return False
    for e in epochs:
        if spaces[e] in loss_spaces:
            loss_spaces.remove(spaces[e])
        spaces[e], cryptos[e], streams[e] = space, pair, stream
    for version in initial:
        initial[version] = pair
    zero = cryptos.get(tls.Epoch.ZERO_RTT)
    if zero is not None and not zero.recv.is_valid() and not zero.send.is_valid():
        cryptos[tls.Epoch.ZERO_RTT] = pair   # never set up again once the handshake is done
    return True


ONE_RTT_CRYPTO_SCRATCH = 512    # room for a NewSessionTicket (~200 B); the server writes nothing else


class _HandshakeDone:
    """Stands in for a server connection's TLS context once its handshake is complete. aioquic
    keeps the whole context (key schedule, transcript hash, the handshake's extensions) for the
    connection's life, and in that state answers any further handshake message with
    unexpected_message (which closes the connection); this does the same and keeps only what
    aioquic still reads afterwards."""

    def __init__(self, done: Any) -> None:
        self.state = done.state
        self.alpn_negotiated = done.alpn_negotiated
        self.early_data_accepted = done.early_data_accepted
        self.session_resumed = done.session_resumed
        self.client_random = done.client_random

    def handle_message(self, input_data: bytes, output_buf: Any) -> None:
        if input_data:
            raise tls.AlertUnexpectedMessage("the handshake is complete")


def trim_after_handshake(quic: QuicConnection) -> bool:
    """Free what only the handshake needed, once it is complete: aioquic keeps three 16 KB scratch
    buffers for outgoing TLS messages and the TLS context for the connection's whole life. The
    Initial and Handshake buffers are never written again (their keys are gone or about to be), the
    1-RTT one shrinks, a server's context is replaced by `_HandshakeDone`, without a QUIC logger
    the keys' logging callbacks go (`_drop_key_log_callbacks`), and the paths' challenge queues
    become `_SmallQueue`s."""
    buffers = getattr(quic, "_crypto_buffers", None)
    context = getattr(quic, "tls", None)
    if (_Buffer is None or not isinstance(buffers, dict) or len(buffers) != 3
            or not isinstance(context, tls.Context)):
        return False
    for epoch in list(buffers):
        if epoch == tls.Epoch.ONE_RTT:
            buffers[epoch] = _Buffer(capacity=ONE_RTT_CRYPTO_SCRATCH)
        elif epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE):
            buffers[epoch] = _Buffer(capacity=0)
    if (not quic.configuration.is_client and context.state == tls.State.SERVER_POST_HANDSHAKE
            and all(hasattr(context, name) for name in
                    ("alpn_negotiated", "early_data_accepted", "session_resumed", "client_random"))):
        quic.tls = _HandshakeDone(context)  # type: ignore[assignment]
        _share_discarded_epochs(quic)
    _drop_key_log_callbacks(quic)
    for path in getattr(quic, "_network_paths", ()):
        _small_queues(path, ("local_challenges", "remote_challenges"))
    return True


_ATOMS = frozenset({int, float, str, bytes, bytearray, bool, type(None), frozenset, memoryview})
_CONTAINERS = frozenset({list, tuple, set, collections.deque, _SmallQueue})
_CLEARABLE: dict[type, bool] = {}


def _clearable(kind: type) -> bool:
    known = _CLEARABLE.get(kind)
    if known is None:
        ours = kind.__module__.startswith("aioquic") or issubclass(kind, QuicConnection)
        known = _CLEARABLE[kind] = ours and not issubclass(kind, enum.Enum) and kind is not QuicConfiguration
    return known


def release(quic: QuicConnection, keep: Tuple[Any, ...] = ()) -> None:
    """Break the reference cycles inside a finished aioquic connection so it is freed at once.

    aioquic's objects point back at their connection (frame-handler table, loss-recovery and TLS
    callbacks, sent packets holding delivery handlers that hold their packet space), so without
    this a closed connection waits for a full garbage collection. Every per-connection aioquic
    object reachable from `quic` has its attributes dropped; shared ones (the configuration and
    anything in `keep`, enum members) are not touched and not walked into. (Frozensets are not
    walked: aioquic's hold epochs, and they are shared between connections.)"""
    shared = {id(quic.configuration)} | {id(obj) for obj in (*keep, *_DISCARDED)}
    seen: set[int] = set()
    stack: List[Any] = [quic]
    while stack:
        obj = stack.pop()
        kind = type(obj)
        if kind in _ATOMS or id(obj) in seen or id(obj) in shared:
            continue
        seen.add(id(obj))
        if kind is dict:
            stack += obj.values()
        elif kind in _CONTAINERS:
            stack += obj
        elif kind is types.MethodType:
            stack.append(obj.__self__)
        elif kind is functools.partial:
            stack += [*obj.args, *obj.keywords.values()]
        elif _clearable(kind):
            attrs = getattr(obj, "__dict__", None)
            if type(attrs) is dict:
                stack += attrs.values()
                attrs.clear()


@dataclass(frozen=True)
class Capabilities:
    """What this aioquic lets TSQ do; all True on a tested version."""

    aioquic: str
    version_tested: bool
    late_t3: bool          # T3 written into the packet right before encryption
    packet_match: bool     # which datagram carried a message (the client's kernel T1)
    spki_pin: bool         # the peer certificate is readable (pins can be checked)
    datagram_params: bool  # the peer's max_datagram_frame_size is readable
    stateless_close: bool  # refusals and bad tokens answered with CONNECTION_CLOSE at once
    bounded_windows: bool  # stream windows fixed, few streams, ACK on the response
    handshake_trim: bool   # the handshake's scratch buffers freed once it is complete
    fast_exchange: bool    # DATAGRAM exchanges past aioquic's generic packet path

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def capabilities() -> Capabilities:
    """Probe the hooks on a throw-away connection (no packets leave)."""
    quic = ServerConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["tsq"]))
    crypto_ok = isinstance(getattr(quic, "_cryptos", None), dict)
    return Capabilities(
        aioquic=AIOQUIC_VERSION, version_tested=VERSION_TESTED, late_t3=crypto_ok, packet_match=crypto_ok,
        spki_pin=hasattr(tls.Context, "_peer_certificate") or _instance_has_peer_cert(),
        datagram_params=hasattr(quic, "_remote_max_datagram_frame_size"),
        stateless_close=stateless_close(1, bytes(8), bytes(8), 0x2) is not None,
        bounded_windows=all(bound_connection(quic, max_streams_bidi=4).__dict__.values()),
        handshake_trim=_Buffer is not None and hasattr(tls.Epoch, "ONE_RTT"),
        fast_exchange=fast_exchange.supported(quic))


def _instance_has_peer_cert() -> bool:
    ctx = tls.Context(is_client=True)
    return hasattr(ctx, "_peer_certificate")
