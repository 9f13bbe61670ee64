"""The server's DATAGRAM fast path (tsq.quic.fast_exchange) against aioquic's generic path.

Real QUIC over loopback. TSQ's client for whole exchanges; aioquic's own client driven packet by
packet (test_open_internet.RawClient) where a packet must be replayed, corrupted or sent under a new
key phase. Each test checks what the peer sees and what the server counted, and peeks at aioquic's
loss-recovery state where the fast path registers what it sent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tsq import wire
from tsq.quic import fast_exchange
from tsq.quic.client import TsqClient, TsqError, TsqInvalidResponse
from tsq.quic.server import ServerThread
from tsq.quic.trust import generate_self_signed, spki_pin_pem

from .test_open_internet import RawClient, make_server

Keys = Tuple[bytes, bytes, str]


@pytest.fixture(scope="module")
def keys() -> Keys:
    cert, key = generate_self_signed(["localhost"])
    return cert, key, spki_pin_pem(cert)


def stats(srv: ServerThread) -> Dict[str, int]:
    assert srv.server is not None
    return dict(srv.call(lambda: srv.server.stats.snapshot() if srv.server else {}))


async def answered(c: TsqClient, mode: str) -> Optional[Any]:
    """One exchange; None for an answer the client's §6.6 check discarded. On a µs loopback round
    trip a basic T3 (stamped before the packet left, plus the measured stamp-to-wire minimum) can
    land after the real departure now and then, on either path (docs/benchmarks.md): answered all
    the same."""
    try:
        return await c.exchange(mode)
    except TsqInvalidResponse:
        return None


def exchanges(srv: ServerThread, pin: str, phases: List[List[str]]) -> Tuple[List[Any], List[Dict[str, int]]]:
    """Exchanges of one client, phase by phase; the server's counters after each phase."""
    async def go() -> Tuple[List[Any], List[Dict[str, int]]]:
        c = TsqClient(f"127.0.0.1:{srv.port}", pin=pin)
        results, counters = [], []
        try:
            for modes in phases:
                results += [await answered(c, mode) for mode in modes]
                await asyncio.sleep(0.2)   # the client's ACKs of this phase's answers are in
                counters.append(stats(srv))
            return results, counters
        finally:
            await c.close()
    return asyncio.run(asyncio.wait_for(go(), 60))


@pytest.mark.parametrize("fast", [True, False])
def test_datagram_exchanges_take_the_fast_path_and_streams_do_not(keys: Keys, fast: bool) -> None:
    """With the fast path every steady-state DATAGRAM exchange is read and answered by it, also
    after stream requests on the same connection (which go through aioquic: the first answer after a
    stream has finished is declined too, so aioquic discards the stream and grants a new one); the
    client accepts every answer whichever path built it. Switched off, the fast path is never taken."""
    phases = [["datagram"] * 6, ["stream"] * 2 + ["datagram"] * 2, ["datagram"] * 10]
    with make_server(keys, fast_path=fast) as srv:
        results, counters = exchanges(srv, keys[2], phases)
    got = counters[-1]
    assert len(results) == 20
    valid = [r for r in results if r is not None]
    assert len(valid) >= 15 and all(r.delay_ns > 0 for r in valid)
    assert got["requests_datagram"] >= 18 and got["requests_stream"] == 2
    assert got["handler_failures"] == 0
    steady = got["fast_answers"] - counters[1]["fast_answers"]
    if fast:
        assert steady == 10
        assert got["fast_received"] >= got["fast_answers"]
    else:
        assert got["fast_answers"] == got["fast_received"] == 0


def _server_connection(srv: ServerThread) -> Any:
    assert srv.server is not None
    conns = list({id(c): c for c in srv.server._conns.values()}.values())  # test-side peek
    assert len(conns) == 1
    return conns[0]


def test_sent_packets_are_registered_and_acknowledged_like_aiquics(keys: Keys) -> None:
    """After many fast exchanges aioquic's loss recovery holds no sent packet the client has
    acknowledged: the fast path's packets were registered (numbers in order, bytes in flight) and
    freed by the client's ACKs, read on the fast path too; the idle timer is ahead."""
    with make_server(keys) as srv:
        async def go() -> Tuple[int, int, int, float]:
            c = TsqClient(f"127.0.0.1:{srv.port}", pin=keys[2])
            try:
                for _ in range(40):
                    await answered(c, "datagram")
                await asyncio.sleep(0.3)   # the client's delayed ACK of the last answer
                conn = _server_connection(srv)

                def peek() -> Tuple[int, int, int, float]:
                    quic = conn.quic
                    space = quic._spaces[fast_exchange.tls.Epoch.ONE_RTT]
                    return (len(space.sent_packets), quic._loss.bytes_in_flight, quic._packet_number,
                            quic._close_at - srv.server._loop.time())
                return srv.call(peek)  # type: ignore[no-any-return]
            finally:
                await c.close()
        in_flight_packets, in_flight_bytes, next_pn, idle_left = asyncio.run(asyncio.wait_for(go(), 60))
        got = stats(srv)
    assert got["fast_answers"] >= 35
    assert next_pn >= 40
    assert in_flight_packets <= 2 and in_flight_bytes <= 2 * 1500
    assert idle_left > 1.0


@contextlib.contextmanager
def raw_connection(keys: Keys, **server: Any) -> Iterator[Tuple[ServerThread, RawClient]]:
    """A server and aioquic's own client, its handshake done and the server's first flight read."""
    with make_server(keys, **server) as srv:
        raw = RawClient(srv.port)
        try:
            raw.handshake()
            _answers(raw, 0.3)
            yield srv, raw
        finally:
            raw.close()


def _request(nonce: bytes) -> bytes:
    return wire.encode_request(wire.Request(nonce=nonce))


def _raw_exchange(raw: RawClient, nonce: bytes, replay: int = 1) -> List[bytes]:
    """Send one DATAGRAM request (`replay` copies of its datagram); the DATAGRAM answers read."""
    raw.quic.send_datagram_frame(_request(nonce))
    datagrams = raw.outgoing()
    for _ in range(replay):
        raw.send(datagrams)
    return _answers(raw)


def _answers(raw: RawClient, timeout_s: float = 1.0) -> List[bytes]:
    raw.feed(raw.receive(timeout_s))
    got = []
    while True:
        event = raw.quic.next_event()
        if event is None:
            return got
        data = getattr(event, "data", None)
        if type(event).__name__ == "DatagramFrameReceived" and data is not None:
            got.append(data)


def _nonces(answers: List[bytes]) -> List[bytes]:
    out = []
    for data in answers:
        resp = wire.decode_response(data)
        assert isinstance(resp, wire.Response)
        out.append(resp.nonce)
    return out


def test_a_replayed_packet_is_answered_once(keys: Keys) -> None:
    with raw_connection(keys) as (srv, raw):
        assert _nonces(_raw_exchange(raw, bytes(16))) == [bytes(16)]
        before = stats(srv)
        nonce = os.urandom(16)
        assert _nonces(_raw_exchange(raw, nonce, replay=3)) == [nonce]
        after = stats(srv)
    assert after["requests_datagram"] - before["requests_datagram"] == 1
    assert after["fast_answers"] - before["fast_answers"] == 1


def test_a_corrupted_packet_is_dropped_and_the_connection_lives_on(keys: Keys) -> None:
    with raw_connection(keys) as (srv, raw):
        raw.quic.send_datagram_frame(_request(bytes(16)))
        (datagram,) = raw.outgoing()
        bad = bytearray(datagram)
        bad[-1] ^= 0x01                      # the AEAD tag: it no longer decrypts
        before = stats(srv)
        raw.send([bytes(bad)])
        assert _answers(raw, 0.5) == []
        nonce = os.urandom(16)
        assert _nonces(_raw_exchange(raw, nonce)) == [nonce]
        after = stats(srv)
    assert after["requests_datagram"] - before["requests_datagram"] == 1
    assert after["closed_by_error"] == before["closed_by_error"]


def test_a_key_update_goes_through_aioquic_and_the_fast_path_resumes(keys: Keys) -> None:
    """The first packet under the client's new key phase is declined by the fast path (aioquic
    derives the next keys and answers under them); the packets after it are the fast path's again."""
    with raw_connection(keys) as (srv, raw):
        for _ in range(3):
            _raw_exchange(raw, os.urandom(16))
        before = stats(srv)
        raw.quic.request_key_update()
        nonces = [os.urandom(16) for _ in range(4)]
        answered = [n for n in nonces for got in [_nonces(_raw_exchange(raw, n))] if got == [n]]
        after = stats(srv)
        conn = _server_connection(srv)
        one_rtt = fast_exchange.tls.Epoch.ONE_RTT

        def peek() -> Tuple[int, bool]:
            quic = conn.quic
            same = quic._cryptos[one_rtt] is conn.fast._pair and quic._spaces[one_rtt] is conn.fast._space
            return quic._cryptos[one_rtt].recv.key_phase, same
        phase, same_objects = srv.call(peek)
    assert answered == nonces
    assert phase == 1
    assert same_objects   # the pair and space the fast path looked up once are still aioquic's
    assert after["fast_answers"] - before["fast_answers"] >= 2


def test_the_fast_path_declines_what_it_does_not_handle() -> None:
    """Frames other than PADDING, PING, ACK and DATAGRAM, an empty payload, an oversized DATAGRAM."""
    class Quic:
        class _configuration:
            max_datagram_frame_size = 64
        host_cid = bytes(8)

        def __init__(self) -> None:
            self._spaces = {fast_exchange.tls.Epoch.ONE_RTT: None}
            self._cryptos: Dict[Any, Any] = {}

    fast = fast_exchange.FastExchange(Quic())
    assert fast._parse(b"") is None
    assert fast._parse(b"\x08\x00\x00") is None                 # a STREAM frame
    assert fast._parse(b"\x31\x05abc") is None                  # a DATAGRAM longer than its packet
    assert fast._parse(b"\x31\x50" + bytes(80)) is None        # larger than max_datagram_frame_size
    acks, datagrams, eliciting = fast._parse(b"\x00\x00\x01\x31\x03abc\x00\x00") or ([], [], False)
    assert datagrams == [b"abc"] and eliciting and not acks
    parsed = fast._parse(b"\x02\x05\x00\x00\x05")                # ACK of packets 0-5, no other frame
    assert parsed is not None and not parsed[2] and len(parsed[0]) == 1


def test_timeouts_still_fire_after_fast_exchanges(keys: Keys) -> None:
    """The idle timer the fast path moves is the one aioquic enforces: a client that goes silent is
    closed after the idle timeout (short here), its connection freed."""
    with raw_connection(keys, idle_timeout_s=1.0) as (srv, raw):
        for _ in range(3):
            _raw_exchange(raw, os.urandom(16))
        assert stats(srv)["fast_answers"] >= 2
        deadline = time.monotonic() + 15
        while srv.call(lambda: srv.server.connection_count if srv.server else 0) and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.call(lambda: srv.server.connection_count if srv.server else 0) == 0


def test_exchanges_through_loss_duplication_and_reordering(keys: Keys) -> None:
    """Through the impairment relay (10 % loss each way, duplicates, reordering) the fast path's
    packets are declared lost and acknowledged by aioquic's loss recovery like its own: exchanges go
    on answering, nothing is answered twice, and the server's bytes in flight drain once the
    client's ACKs are in."""
    from tsq.testing.relay import Impairment, UdpRelay

    impair = Impairment(loss=0.1, duplicate=0.1, reorder=0.2, reorder_s=0.002)
    with make_server(keys) as srv, UdpRelay(("127.0.0.1", srv.port), forward=impair, backward=impair,
                                            seed=12) as relay:
        async def go() -> Tuple[int, int]:
            c = TsqClient(f"127.0.0.1:{relay.port}", pin=keys[2], timeout_s=0.3, connect_timeout_s=10.0)
            ok = failed = 0
            try:
                for _ in range(80):
                    try:
                        await c.exchange("datagram")
                        ok += 1
                    except TsqError:
                        failed += 1
                await asyncio.sleep(0.5)
            finally:
                await c.close()
            return ok, failed
        ok, failed = asyncio.run(asyncio.wait_for(go(), 120))
        conn_state = srv.call(lambda: [(c.quic._loss.bytes_in_flight, c.fast is not None)
                                       for c in {id(c): c for c in srv.server._conns.values()}.values()]
                              if srv.server else [])
        got = stats(srv)
    assert relay.counters.dropped > 0 and relay.counters.duplicated > 0
    assert ok >= 40, (ok, failed)
    assert got["fast_answers"] >= 30 and got["handler_failures"] == 0
    assert got["requests_datagram"] <= 80 + 2   # a duplicated request is answered at most once
    for in_flight, _ in conn_state:   # the connection may already be closing; if not, nothing is stuck
        assert in_flight <= 4 * 1500
