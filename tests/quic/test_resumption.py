"""Reconnects resume the TLS session (issue 13: a reconnect must not cost a full handshake on links
where bytes cost money), and a resumed session keeps the pin verdict of the session it resumes."""

from __future__ import annotations

import asyncio

import pytest

from tsq.quic.client import TsqClient, TsqHandshakeError
from tsq.quic.server import ServerConfig, ServerThread
from tsq.quic.trust import generate_self_signed, spki_pin_pem
from tsq.testing.certs import TestPki


def test_a_reconnect_resumes_the_session(pki: TestPki, server: ServerThread) -> None:
    async def go() -> None:
        c = TsqClient(f"127.0.0.1:{server.port}", pin=pki.server_pin)
        assert (await c.exchange()).delay_ns > 0
        await asyncio.sleep(0.1)                 # the ticket arrives after the handshake
        await c.close()
        assert (await c.exchange()).delay_ns > 0  # a new connection ...
        assert c.connections == 2 and c.resumed == 1   # ... that resumed the first one's session
        await c.close()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_a_ticket_from_a_refused_server_is_never_used(pki: TestPki) -> None:
    """The pin is checked after the handshake: a server whose certificate failed it may already
    have sent a ticket, and resuming that would skip the check. It must not be kept."""
    cert, key = generate_self_signed(["localhost"])
    with ServerThread(ServerConfig(cert_pem=cert, key_pem=key, host="127.0.0.1", port=0)) as srv:
        async def go() -> None:
            c = TsqClient(f"127.0.0.1:{srv.port}", pin=pki.server_pin)   # not this server's
            for _ in range(2):
                with pytest.raises(TsqHandshakeError, match="pin"):
                    await c.exchange()
                await asyncio.sleep(0.1)
            assert c.resumed == 0
            good = TsqClient(f"127.0.0.1:{srv.port}", pin=spki_pin_pem(cert))
            assert (await good.exchange()).delay_ns > 0
            await good.close()

        asyncio.run(asyncio.wait_for(go(), 30))
