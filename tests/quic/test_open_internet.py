"""The server on the open internet: Retry before state, tokens, refusal, bounded windows, freed
connections, no Version Negotiation for small datagrams. Real QUIC over loopback; the "attacker"
is aioquic's own client driven packet by packet (and, where it must misbehave, told to)."""

from __future__ import annotations

import asyncio
import gc
import logging
import select
import socket
import ssl
import time
import weakref
from typing import Any, Iterator, List, Optional, Tuple

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicErrorCode, QuicPacketType

from tsq import wire
from tsq.quic import compat
from tsq.quic.client import TsqClient
from tsq.quic.retry import RetryTokens
from tsq.quic.server import MAX_STREAMS, STREAM_WINDOW, ServerConfig, ServerThread
from tsq.quic.trust import generate_self_signed, spki_pin_pem

SECRET = b"tsq-test-retry-secret-0123456789"


@pytest.fixture(scope="module")
def keys() -> Tuple[bytes, bytes, str]:
    cert, key = generate_self_signed(["localhost"])
    return cert, key, spki_pin_pem(cert)


def make_server(keys: Tuple[bytes, bytes, str], **kw: Any) -> ServerThread:
    kw.setdefault("retry_secret", SECRET)
    return ServerThread(ServerConfig(cert_pem=keys[0], key_pem=keys[1], host="127.0.0.1", port=0, **kw))


@pytest.fixture(scope="module")
def server(keys: Tuple[bytes, bytes, str]) -> Iterator[ServerThread]:
    with make_server(keys) as srv:
        yield srv


class RawClient:
    """aioquic's client on its own UDP socket, one datagram at a time (no asyncio)."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["tsq"], verify_mode=ssl.CERT_NONE,
                                max_datagram_frame_size=1200)
        self.quic = QuicConnection(configuration=cfg)
        self.quic.connect(self.server, now=time.monotonic())

    def outgoing(self) -> List[bytes]:
        return [data for data, _ in self.quic.datagrams_to_send(now=time.monotonic())]

    def send(self, datagrams: List[bytes], sock: Optional[socket.socket] = None) -> None:
        for data in datagrams:
            (sock or self.sock).sendto(data, self.server)

    def receive(self, timeout_s: float = 1.0, sock: Optional[socket.socket] = None) -> List[bytes]:
        sock = sock or self.sock
        got: List[bytes] = []
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            ready, _, _ = select.select([sock], [], [], max(0.0, end - time.monotonic()) if not got else 0.05)
            if not ready:
                break
            got.append(sock.recv(65535))
        return got

    def feed(self, datagrams: List[bytes]) -> None:
        for data in datagrams:
            self.quic.receive_datagram(data, self.server, now=time.monotonic())

    def handshake(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            self.send(self.outgoing())
            self.feed(self.receive(0.5))
            if self.quic._handshake_complete:  # test-side peek: is the handshake done
                self.send(self.outgoing())
                return
        raise AssertionError("no handshake")

    def close(self) -> None:
        self.sock.close()


def packet_type(data: bytes) -> Optional[QuicPacketType]:
    header = compat.parse_header(data, 8)
    return header.packet_type if header is not None else None


def count(srv: ServerThread) -> int:
    assert srv.server is not None
    return int(srv.call(lambda: srv.server.connection_count if srv.server else 0))


def settled(srv: ServerThread, timeout_s: float = 10.0) -> ServerThread:
    """Wait until earlier tests' connections have finished closing (3 PTO after their close)."""
    deadline = time.monotonic() + timeout_s
    while count(srv) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(srv) == 0
    return srv


def test_a_client_completes_through_retry(keys: Tuple[bytes, bytes, str], server: ServerThread) -> None:
    assert server.server is not None
    before = server.server.stats.snapshot()

    async def go() -> None:
        c = TsqClient(f"127.0.0.1:{server.port}", pin=keys[2])
        try:
            assert (await c.exchange("datagram")).delay_ns > 0
            assert (await c.exchange("stream")).delay_ns > 0
        finally:
            await c.close()

    asyncio.run(asyncio.wait_for(go(), 30))
    after = server.server.stats.snapshot()
    assert after["retries_sent"] - before["retries_sent"] == 1
    assert after["validated"] - before["validated"] >= 1
    assert after["connections_opened"] - before["connections_opened"] == 1


def test_an_initial_gets_a_retry_and_no_state(server: ServerThread) -> None:
    settled(server)
    raw = RawClient(server.port)
    try:
        raw.send(raw.outgoing())
        answers = raw.receive()
        assert [packet_type(a) for a in answers] == [QuicPacketType.RETRY]
        assert len(answers[0]) < 200  # far below the 1200 B Initial: no amplification
        assert count(server) == 0
    finally:
        raw.close()


def _validated_initial(raw: RawClient) -> List[bytes]:
    raw.send(raw.outgoing())
    raw.feed(raw.receive())                # the Retry
    second = raw.outgoing()                # the Initial echoing the token
    assert second and compat.parse_header(second[0], 8) is not None
    return second


def _flip_token_byte(datagram: bytes) -> bytes:
    header = compat.parse_header(datagram, 8)
    assert header is not None and header.token
    at = datagram.index(header.token) + len(header.token) - 1
    return datagram[:at] + bytes([datagram[at] ^ 1]) + datagram[at + 1:]


@pytest.mark.parametrize("tamper", ["forged", "other-port", "undecryptable"])
def test_bad_tokens_and_undecryptable_initials_get_no_connection_state(
        server: ServerThread, tamper: str) -> None:
    assert settled(server).server is not None
    before = server.server.stats.snapshot()
    raw = RawClient(server.port)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        initial = _validated_initial(raw)
        via: Optional[socket.socket] = None
        if tamper == "forged":
            initial = [_flip_token_byte(initial[0]), *initial[1:]]
        elif tamper == "other-port":
            via = other                    # the same Initial from another port: another address
        else:
            header = compat.parse_header(initial[0], 8)
            assert header is not None
            at = header.packet_length - 1  # in the AEAD tag (aioquic may pad after the packet)
            initial = [initial[0][:at] + bytes([initial[0][at] ^ 1]) + initial[0][at + 1:], *initial[1:]]
        raw.send(initial, sock=via)
        answers = raw.receive(0.5, sock=via)
        assert count(server) == 0
        after = server.server.stats.snapshot()
        if tamper == "undecryptable":
            assert answers == [] and after["unvalidated_dropped"] > before["unvalidated_dropped"]
        else:
            # RFC 9000 §8.1.3: told at once (INVALID_TOKEN) in an Initial, no connection created
            assert [packet_type(a) for a in answers] == [QuicPacketType.INITIAL]
            assert after["tokens_invalid"] == before["tokens_invalid"] + 1
        assert after["connections_opened"] == before["connections_opened"]
    finally:
        raw.close()
        other.close()


def test_an_expired_token_gets_no_connection_state(keys: Tuple[bytes, bytes, str]) -> None:
    with make_server(keys, token_lifetime_s=0.2) as srv:
        assert srv.server is not None
        raw = RawClient(srv.port)
        try:
            initial = _validated_initial(raw)
            time.sleep(0.4)
            raw.send(initial)
            raw.feed(raw.receive(0.5))
            assert compat.close_received(raw.quic) == (QuicErrorCode.INVALID_TOKEN, "")
            assert count(srv) == 0 and srv.server.stats.tokens_invalid == 1
        finally:
            raw.close()


def test_tokens_are_bound_to_address_port_and_retry_cid_and_expire() -> None:
    tokens = RetryTokens(SECRET, lifetime_s=10.0)
    addr = ("192.0.2.7", 4433)
    token = tokens.issue(addr, b"odcid-01", b"retry-01", now_s=100.0)
    assert tokens.check(token, addr, b"retry-01", 105.0).odcid == b"odcid-01"
    assert not tokens.check(token, ("192.0.2.7", 4434), b"retry-01", 105.0).valid
    assert not tokens.check(token, ("192.0.2.8", 4433), b"retry-01", 105.0).valid
    assert not tokens.check(token, addr, b"retry-02", 105.0).valid
    assert tokens.check(token, addr, b"retry-01", 110.5).reason == "expired"
    assert not RetryTokens(b"another-secret-0123456789abcdef").check(token, addr, b"retry-01", 105.0).valid
    assert not RetryTokens.is_ours(b"\x00" * 40) and RetryTokens.is_ours(token)
    for cut in range(len(token)):
        assert not tokens.check(token[:cut], addr, b"retry-01", 105.0).valid


def test_a_refused_client_gets_connection_refused_at_once(keys: Tuple[bytes, bytes, str]) -> None:
    with make_server(keys, max_connections_per_source=1) as srv:
        assert srv.server is not None
        first = RawClient(srv.port)
        second = RawClient(srv.port)
        try:
            first.handshake()
            assert count(srv) == 1
            initial = _validated_initial(second)
            t0 = time.monotonic()
            second.send(initial)
            second.feed(second.receive(0.5))
            answered = time.monotonic() - t0
            assert compat.close_received(second.quic) == (QuicErrorCode.CONNECTION_REFUSED, "server busy")
            assert answered < 0.3  # one loopback round trip, not a handshake timeout
            assert count(srv) == 1 and srv.server.stats.connections_refused == 1
        finally:
            first.close()
            second.close()


def test_limits_count_validated_peers_only(keys: Tuple[bytes, bytes, str]) -> None:
    """Unvalidated Initials (no token) fill nothing: a legitimate client still gets in."""
    with make_server(keys, max_connections=2, max_connections_per_source=1) as srv:
        floods = [RawClient(srv.port) for _ in range(20)]
        try:
            for raw in floods:
                raw.send(raw.outgoing())
            assert count(srv) == 0

            async def go() -> None:
                c = TsqClient(f"127.0.0.1:{srv.port}", pin=keys[2])
                assert (await c.exchange()).delay_ns > 0
                await c.close()

            asyncio.run(asyncio.wait_for(go(), 30))
        finally:
            for raw in floods:
                raw.close()
        assert srv.server is not None and srv.server.stats.retries_sent >= 21


def test_an_oversized_request_is_refused_once_without_a_traceback(
        keys: Tuple[bytes, bytes, str], server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    assert server.server is not None
    before = server.server.stats.snapshot()
    big = b"\x01\x05" + bytes(1_000_000)  # never a whole request: it only grows

    async def go() -> Optional[bytes]:
        c = TsqClient(f"127.0.0.1:{server.port}", pin=keys[2], timeout_s=2.0)
        try:
            answer = await c.send_raw(big, "stream")
            assert (await c.exchange("stream")).delay_ns > 0  # the connection still serves
            return answer
        finally:
            await c.close()

    with caplog.at_level(logging.DEBUG, logger="tsq"):
        answer = asyncio.run(asyncio.wait_for(go(), 30))
    assert answer is not None
    decoded = wire.decode_response(answer)
    assert isinstance(decoded, wire.ErrorResponse) and decoded.code == wire.ERR_MALFORMED
    after = server.server.stats.snapshot()
    assert after["oversized"] == before["oversized"] + 1
    assert after["handler_failures"] == before["handler_failures"]
    assert not [r for r in caplog.records if r.name.startswith("tsq") and r.levelno >= logging.WARNING]


def test_a_client_ignoring_flow_control_is_closed_and_buffers_at_most_the_window(
        server: ServerThread) -> None:
    assert settled(server).server is not None
    before = server.server.stats.closed_by_error
    raw = RawClient(server.port)
    try:
        raw.handshake()
        sid = raw.quic.get_next_available_stream_id()
        raw.quic.send_stream_data(sid, b"")
        # Attacker: pretend the server granted 1 MB and send it all, out of order first.
        stream = raw.quic._streams[sid]
        stream.max_stream_data_remote = 2_000_000
        raw.quic._remote_max_data = 2_000_000
        raw.quic.send_stream_data(sid, bytes(1_000_000))
        for _ in range(40):
            raw.send(raw.outgoing())
            raw.feed(raw.receive(0.05))
            if compat.close_received(raw.quic) is not None:
                break
        assert compat.close_received(raw.quic) == (QuicErrorCode.FLOW_CONTROL_ERROR, "Over stream data limit")
        deadline = time.monotonic() + 5
        while count(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count(server) == 0 and server.server.stats.closed_by_error == before + 1
    finally:
        raw.close()


def test_windows_and_stream_counts_are_sized_for_tsq(server: ServerThread) -> None:
    raw = RawClient(server.port)
    try:
        raw.handshake()
        assert raw.quic._remote_max_stream_data_bidi_remote == STREAM_WINDOW  # peer's view
        assert raw.quic._remote_max_streams_bidi == MAX_STREAMS
        assert raw.quic._remote_max_streams_uni == 0
    finally:
        raw.close()


def test_a_closed_connection_is_freed_at_once_with_gc_disabled(keys: Tuple[bytes, bytes, str]) -> None:
    with make_server(keys) as srv:
        assert srv.server is not None
        refs: List[weakref.ref[Any]] = []

        def grab() -> List[weakref.ref[Any]]:
            assert srv.server is not None
            conns = {id(c): c for c in srv.server._conns.values()}.values()
            return [weakref.ref(obj) for c in conns for obj in (c.quic, c.session, c.driver, c)]

        async def go() -> None:
            for _ in range(3):
                c = TsqClient(f"127.0.0.1:{srv.port}", pin=keys[2])
                await c.exchange("stream")
                await c.exchange("datagram")
                refs.extend(srv.call(grab))
                await c.close()
            deadline = time.monotonic() + 10
            while srv.server is not None and srv.server.connection_count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

        gc.collect()
        gc.disable()
        try:
            asyncio.run(asyncio.wait_for(go(), 30))
            assert len(refs) >= 12 and count(srv) == 0
            assert [r for r in refs if r() is not None] == []
        finally:
            gc.enable()


@pytest.mark.parametrize("size", [100, 1199])
def test_no_version_negotiation_for_small_datagrams(server: ServerThread, size: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.3)
    try:
        def long_header(length: int) -> bytes:
            unknown_version = (0x1A2A3A4A).to_bytes(4, "big")
            head = bytes([0xC0]) + unknown_version + bytes([8]) + bytes(8) + bytes([8]) + bytes(8)
            return head + bytes(length - len(head))

        sock.sendto(long_header(size), ("127.0.0.1", server.port))
        with pytest.raises(socket.timeout):
            sock.recv(2048)
        sock.sendto(long_header(1200), ("127.0.0.1", server.port))
        answer = sock.recv(2048)
        assert packet_type(answer) == QuicPacketType.VERSION_NEGOTIATION
    finally:
        sock.close()


@pytest.mark.parametrize("metadata", [(), (("site", "lab-7"), ("operator", "example"))])
def test_precision_requests_are_padded_to_the_response_not_to_256_bytes(
        keys: Tuple[bytes, bytes, str], metadata: Tuple[Tuple[str, str], ...]) -> None:
    """After the warm-up exchange the client knows the response's length: every later request is
    exactly as long as its (acknowledged) Precision Mode response, and both are well under 256 B."""
    with make_server(keys, metadata=metadata) as srv:
        async def go() -> List[Tuple[int, int, bool]]:
            c = TsqClient(f"127.0.0.1:{srv.port}", pin=keys[2])
            sizes = []
            try:
                for mode in ("datagram", "stream", "datagram", "datagram"):
                    await c.exchange(mode)
                    link = c._link
                    assert link is not None and c.last_response is not None
                    req, _ = link.session.request_bytes(bytes(16))
                    resp = wire.encode_response(c.last_response)
                    sizes.append((len(req), len(resp), c.last_response.precision))
            finally:
                await c.close()
            return sizes

        sizes = asyncio.run(asyncio.wait_for(go(), 30))
    for req_len, resp_len, acked in sizes[1:]:
        assert acked and req_len == resp_len < 256
    assert sizes[-1][0] < (120 if not metadata else 160)
