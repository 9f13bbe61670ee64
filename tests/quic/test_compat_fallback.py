"""The fallback of tsq/quic/compat.py, over real QUIC on loopback: a hook that cannot be installed
turns its capability off without breaking the server (the canaries are in test_compat.py)."""

from __future__ import annotations

import asyncio

import pytest

from tsq import clock
from tsq.quic import compat
from tsq.quic.client import TsqClient
from tsq.quic.server import ServerConfig, ServerThread, load_pem_pair
from tsq.testing.certs import TestPki


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
