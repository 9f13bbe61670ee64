"""One canary per aioquic hook in tsq.quic.compat: if aioquic moves an internal, this fails first.

Client and server connections are driven in memory (aioquic is sans-IO), so each hook is checked on
the objects it touches in production."""

from __future__ import annotations

import gc
import ssl
import weakref
from typing import List, Optional, Tuple

import pytest
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicErrorCode, QuicPacketType

from tsq.quic import compat
from tsq.quic.trust import generate_self_signed, server_configuration

CLIENT = ("192.0.2.1", 5000)
SERVER = ("192.0.2.2", 443)


@pytest.fixture(scope="module")
def server_config() -> QuicConfiguration:
    cert, key = generate_self_signed(["localhost"])
    return server_configuration(cert, key, max_stream_data=4097, max_data=16388)


def client() -> QuicConnection:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["tsq"], verify_mode=ssl.CERT_NONE,
                            max_datagram_frame_size=1200)
    quic = QuicConnection(configuration=cfg)
    quic.connect(SERVER, now=0.0)
    return quic


def first_flight(quic: QuicConnection) -> List[bytes]:
    return [data for data, _ in quic.datagrams_to_send(now=0.0)]


def pair(server_config: QuicConfiguration,
         sent: Optional[List[bytes]] = None) -> Tuple[QuicConnection, QuicConnection]:
    """A client and a `ServerConnection` after their handshake; `sent` collects the client's
    datagrams (its Initial and Handshake packets among them)."""
    c = client()
    flight = first_flight(c)
    header = compat.parse_header(flight[0], 8)
    assert header is not None
    s = compat.ServerConnection(configuration=server_config,
                                original_destination_connection_id=header.destination_cid)
    assert all(vars(compat.bound_connection(s, max_streams_bidi=4)).values())
    now = 0.0
    for _ in range(6):
        for data in flight:
            if sent is not None:
                sent.append(data)
            s.receive_datagram(data, CLIENT, now=now)
        for data, _ in s.datagrams_to_send(now=now):
            c.receive_datagram(data, SERVER, now=now)
        flight = [data for data, _ in c.datagrams_to_send(now=now)]
        now += 0.01
    return c, s


def test_capabilities_are_all_on_for_a_tested_aioquic() -> None:
    caps = compat.capabilities()
    assert caps.version_tested and all(v for k, v in caps.to_json().items() if k != "aioquic")


def test_parse_header_and_initial_decrypts() -> None:
    flight = first_flight(client())
    header = compat.parse_header(flight[0], 8)
    assert header is not None and header.packet_type == QuicPacketType.INITIAL
    assert compat.initial_decrypts(flight[0], 8)
    end = header.packet_length - 1
    assert not compat.initial_decrypts(flight[0][:end] + bytes([flight[0][end] ^ 1]) + flight[0][end + 1:], 8)
    assert not compat.initial_decrypts(b"\xc0" + bytes(1199), 8)
    assert compat.parse_header(b"", 8) is None


def test_stateless_close_is_understood_by_a_client() -> None:
    c = client()
    header = compat.parse_header(first_flight(c)[0], 8)
    assert header is not None and header.version is not None
    packet = compat.stateless_close(header.version, header.destination_cid, header.source_cid,
                                    QuicErrorCode.CONNECTION_REFUSED, "server busy")
    assert packet is not None and len(packet) < 200
    c.receive_datagram(packet, SERVER, now=0.01)
    assert compat.close_received(c) == (QuicErrorCode.CONNECTION_REFUSED, "server busy")


def test_hooks_after_a_handshake(server_config: QuicConfiguration) -> None:
    c, s = pair(server_config)
    assert compat.one_rtt_crypto(s) is not None and compat.one_rtt_crypto(c) is not None
    assert compat.peer_certificate(c) is not None
    assert compat.peer_allows_datagrams(s)
    assert compat.close_received(c) is None


def test_bound_connection_fixes_windows_streams_and_acks(server_config: QuicConfiguration) -> None:
    c, s = pair(server_config)
    assert c._remote_max_streams_bidi == 4 and c._remote_max_streams_uni == 0
    assert c._remote_max_stream_data_bidi_remote == 4097
    sid = c.get_next_available_stream_id()
    c.send_stream_data(sid, bytes(3000))          # well inside the window
    for data, _ in c.datagrams_to_send(now=1.0):
        s.receive_datagram(data, CLIENT, now=1.0)
    s.send_stream_data(sid, b"answer", end_stream=True)
    sent = s.datagrams_to_send(now=1.0)
    assert len(sent) == 1                           # the ACK rode on the answer: no ACK-only packet
    for data, _ in sent:
        c.receive_datagram(data, SERVER, now=1.0)
    assert s._streams[sid].max_stream_data_local == 4097   # never doubled


def test_what_every_connection_shares_is_shared_and_still_works(server_config: QuicConfiguration) -> None:
    """The handshake and exchange in `pair` ran through the shared frame-type table; the overrides
    are the class's, so no connection carries attributes of its own for them."""
    _c, s = pair(server_config)
    _c2, s2 = pair(server_config)
    table = vars(s)["_QuicConnection__frame_handlers"]
    assert isinstance(table, compat._BoundFrameHandlers)
    assert table._table is vars(s2)["_QuicConnection__frame_handlers"]._table
    handler, epochs = table[0x01]                              # PING: bound to this connection
    assert handler.__self__ is s and handler.__func__ is QuicConnection._handle_ping_frame
    assert epochs == frozenset(tls.Epoch)                     # PING: in every epoch
    with pytest.raises(KeyError):                              # aioquic: FRAME_ENCODING_ERROR
        table[0x7F]
    assert "_replenish_connection_ids" not in vars(s) and "_write_stream_limits" not in vars(s)
    assert len(s._host_cids) == compat.ACTIVE_CONNECTION_IDS
    assert compat.trim_after_handshake(s)
    for pair_ in s._cryptos.values():
        assert pair_.send._setup_cb is compat.NoCallback and pair_.recv._teardown_cb is compat.NoCallback


def test_small_queue_is_the_deque_aioquic_uses() -> None:
    q = compat._SmallQueue(maxlen=2)
    with pytest.raises(IndexError):
        q.popleft()
    for item in (b"a", b"b", b"c"):
        q.append(item)
    assert list(q) == [b"b", b"c"] and b"b" in q and q[0] == b"b" and len(q) == 2
    assert q.popleft() == b"b" and q and q.popleft() == b"c" and not q
    unbounded = compat._SmallQueue()
    for i in range(100):
        unbounded.append(i)
    assert len(unbounded) == 100 and unbounded.popleft() == 0


@pytest.mark.parametrize("trimmed", [False, True])
def test_release_frees_a_finished_connection_without_the_collector(server_config: QuicConfiguration,
                                                                   trimmed: bool) -> None:
    _c, s = pair(server_config)
    if trimmed:
        assert compat.trim_after_handshake(s)
    s.close()
    s.datagrams_to_send(now=2.0)
    config = s.configuration
    ref = weakref.ref(s)
    gc.collect()
    gc.disable()
    try:
        compat.release(s)
        del s
        assert ref() is None
    finally:
        gc.enable()
    assert config.alpn_protocols == ["tsq"] and config.certificate is not None  # shared: untouched


@pytest.mark.parametrize("trimmed", [False, True])
def test_after_the_trim_a_late_handshake_message_closes_as_before(
        server_config: QuicConfiguration, trimmed: bool) -> None:
    c, s = pair(server_config)
    if trimmed:
        assert compat.trim_after_handshake(s) and not isinstance(s.tls, tls.Context)
    c._crypto_streams[tls.Epoch.ONE_RTT].sender.write(b"\x04\x00\x00\x00")  # a client-side poke
    for data, _ in c.datagrams_to_send(now=2.0):
        s.receive_datagram(data, CLIENT, now=2.0)
    s.datagrams_to_send(now=2.0)
    assert s._close_event is not None
    assert s._close_event.error_code == QuicErrorCode.CRYPTO_ERROR + 10  # unexpected_message


def test_a_trimmed_connection_still_serves(server_config: QuicConfiguration) -> None:
    c, s = pair(server_config)
    assert compat.trim_after_handshake(s)
    for n in range(3):
        c.send_datagram_frame(b"ping %d" % n)
        for data, _ in c.datagrams_to_send(now=3.0 + n):
            s.receive_datagram(data, CLIENT, now=3.0 + n)
        s.send_datagram_frame(b"pong %d" % n)
        for data, _ in s.datagrams_to_send(now=3.0 + n):
            c.receive_datagram(data, SERVER, now=3.0 + n)
    got = []
    while (event := c.next_event()) is not None:
        if type(event).__name__ == "DatagramFrameReceived":
            got.append(event.data)
    assert got == [b"pong 0", b"pong 1", b"pong 2"]


def exchange_datagrams(c: QuicConnection, s: QuicConnection, now: float) -> List[bytes]:
    """One datagram each way; what the client received."""
    c.send_datagram_frame(b"ping")
    for data, _ in c.datagrams_to_send(now=now):
        s.receive_datagram(data, CLIENT, now=now)
    s.send_datagram_frame(b"pong")
    for data, _ in s.datagrams_to_send(now=now):
        c.receive_datagram(data, SERVER, now=now)
    got = []
    while (event := c.next_event()) is not None:
        if type(event).__name__ == "DatagramFrameReceived":
            got.append(event.data)
    return got


def test_discarded_epochs_are_shared_and_late_handshake_packets_still_dropped(
        server_config: QuicConfiguration) -> None:
    sent: List[bytes] = []
    c, s = pair(server_config, sent)
    c2, s2 = pair(server_config)
    assert compat.trim_after_handshake(s) and compat.trim_after_handshake(s2)
    space, keys, stream = compat._DISCARDED
    for conn in (s, s2):
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE):
            assert conn._spaces[epoch] is space and conn._cryptos[epoch] is keys
            assert conn._crypto_streams[epoch] is stream
        assert all(p is keys for p in conn._cryptos_initial.values())
        assert space not in conn._loss.spaces and len(conn._loss.spaces) == 1
    # The client's Initial and Handshake packets again, late (a retransmission, or an attacker
    # replaying them): no key, dropped; nothing shared is written; the connection serves on.
    long_header = [d for d in sent if d[0] & 0x80]
    assert long_header
    for data in long_header:
        s.receive_datagram(data, CLIENT, now=4.0)
    s.datagrams_to_send(now=4.0)
    assert s._close_event is None
    assert space.discarded and not space.sent_packets and space.ack_at is None
    assert not keys.recv.is_valid() and not keys.send.is_valid() and stream.sender.buffer_is_empty
    assert exchange_datagrams(c, s, 5.0) == [b"pong"]
    # One connection closed and released: the shared objects stay whole for the other.
    s.close()
    s.datagrams_to_send(now=6.0)
    compat.release(s)
    assert vars(space) and vars(keys) and vars(stream) and space.discarded
    assert exchange_datagrams(c2, s2, 7.0) == [b"pong"]
