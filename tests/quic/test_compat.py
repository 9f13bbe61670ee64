"""Canaries for every aioquic internal TSQ uses (tsq/quic/compat.py): one per hook, on a real
handshake over loopback, so an aioquic upgrade that moves one fails here by name; and the
fallback: a hook that cannot be installed turns its capability off without breaking the server."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from aioquic.quic.packet import QuicPacketType

from tsq import clock
from tsq.quic import compat
from tsq.quic.client import TsqClient
from tsq.quic.server import ServerConfig, ServerThread, load_pem_pair
from tsq.quic.trust import spki_pin
from tsq.testing.certs import TestPki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def server(pki: TestPki) -> Iterator[ServerThread]:
    cert, key = load_pem_pair(pki.server_cert, pki.server_key)
    with ServerThread(ServerConfig(cert_pem=cert, key_pem=key, host="127.0.0.1", port=0)) as srv:
        yield srv


def _connected_client(pki: TestPki, port: int) -> Any:
    async def go() -> Any:
        c = TsqClient(f"127.0.0.1:{port}", ca=pki.ca_cert, server_name="localhost")
        await c.connect()
        link = c._link
        assert link is not None
        quic = link.quic
        found = (compat.one_rtt_crypto(quic), compat.peer_certificate(quic),
                 compat.peer_allows_datagrams(quic))
        await c.close()
        return found

    return asyncio.run(asyncio.wait_for(go(), 30))


def test_version_is_in_the_tested_range() -> None:
    assert compat.VERSION_TESTED, f"aioquic {compat.AIOQUIC_VERSION} outside {compat.TESTED_AIOQUIC}"
    caps = compat.capabilities()
    assert caps.late_t3 and caps.packet_match and caps.spki_pin and caps.datagram_params
    assert caps.to_json()["aioquic"] == compat.AIOQUIC_VERSION


def test_hook_one_rtt_crypto_pair_has_encrypt_packet(pki: TestPki, server: ServerThread) -> None:
    pair, _, _ = _connected_client(pki, server.port)
    assert pair is not None and callable(pair.encrypt_packet)


def test_hook_peer_certificate_is_the_servers(pki: TestPki, server: ServerThread) -> None:
    _, cert, _ = _connected_client(pki, server.port)
    assert cert is not None and spki_pin(cert) == pki.server_pin


def test_hook_peer_datagram_parameter_is_read(pki: TestPki, server: ServerThread) -> None:
    _, _, datagrams = _connected_client(pki, server.port)
    assert datagrams is True


def test_hook_header_parser() -> None:
    assert compat.parse_header(b"\x00", 8) is None          # garbage: None, never an exception
    initial = bytes.fromhex("c000000001") + bytes([8]) + bytes(8) + bytes([0]) + bytes([0]) + bytes(1200)
    header = compat.parse_header(initial, 8)
    assert header is not None and header.packet_type == QuicPacketType.INITIAL


def test_without_the_encrypt_hook_the_server_still_answers(pki: TestPki,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The late-T3 hook off (as on an aioquic that moved `_cryptos`): T3 is stamped before the
    packet is built, and every exchange still works and is checked."""
    monkeypatch.setattr(compat, "one_rtt_crypto", lambda quic: None)
    cert, key = load_pem_pair(pki.server_cert, pki.server_key)
    with ServerThread(ServerConfig(cert_pem=cert, key_pem=key, host="127.0.0.1", port=0)) as srv:
        async def go() -> int:
            c = TsqClient(f"127.0.0.1:{srv.port}", ca=pki.ca_cert, server_name="localhost")
            ex = await c.sample("datagram")
            await c.close()
            corr = clock.correlate(clock.CLOCK_REALTIME, clock.CLOCK_MONOTONIC_RAW)
            return ex.offset_ns - (corr.ref_ns - corr.sys_ns)

        error = asyncio.run(asyncio.wait_for(go(), 30))
    assert abs(error) < 5_000_000
