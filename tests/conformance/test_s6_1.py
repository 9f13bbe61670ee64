"""Draft-01 §6.1 Connection Establishment (clause table: test_draft01.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest
from draft01_support import aioquic_server, run

from tsq.quic.client import TsqHandshakeError
from tsq.session.client import ClientOptions
from tsq.session.server import ServerPolicy
from tsq.testing.certs import TestPki


class TestS6_1:
    def test_client_negotiates_alpn_tsq(self, pki: TestPki, tsq_client: Callable[..., Any]) -> None:
        """§6.1: "Clients MUST negotiate the TSQ protocol using the ALPN identifier "tsq" during the
        QUIC handshake." A bare aioquic server that prefers `tsq/1` and `h3` over `tsq` still ends up
        on `tsq` with our client: the client offered `tsq` and nothing the server liked better."""

        async def go() -> None:
            async with aioquic_server(pki, ["tsq/1", "h3", "tsq"]) as port:
                c = tsq_client(port)
                await c.connect()
                assert c.alpn_protocol == "tsq"
                await c.close()

        run(go())

    @pytest.mark.parametrize("server_alpns", [["tsq/1"], ["h3"], ["TSQ", "tsq/2", "tsq "]])
    def test_client_offers_nothing_but_tsq(self, pki: TestPki, tsq_client: Callable[..., Any],
                                           server_alpns: list[str]) -> None:
        """§6.1: "Clients MUST negotiate the TSQ protocol using the ALPN identifier "tsq"". A server
        that speaks only something else finds nothing in common with a default client."""

        async def go() -> None:
            async with aioquic_server(pki, server_alpns) as port:
                c = tsq_client(port, connect_timeout_s=3.0)
                with pytest.raises(TsqHandshakeError) as info:
                    await c.connect()
                assert c.name in str(info.value)
                if server_alpns == ["tsq/1"]:   # the deployed implementation: say how to opt in
                    assert "--allow-legacy-alpn" in str(info.value)
                await c.close()

        run(go())

    def test_sessions_offer_exactly_tsq_by_default(self) -> None:
        """§6.1 (and §7): the ALPN lists both sans-IO sessions hand to QUIC are exactly ["tsq"];
        `tsq/1` appears only on opt-in (docs/wire.md "Choices where draft-01 is open")."""
        assert ClientOptions(name="x").alpns() == ["tsq"]
        assert ServerPolicy().alpns() == ["tsq"]
        assert ClientOptions(name="x", allow_legacy=True).alpns() == ["tsq", "tsq/1"]
        assert ServerPolicy(legacy_alpn=True).alpns() == ["tsq", "tsq/1"]

    def test_exchanges_may_share_one_connection(self, tsq_server: Callable[..., Any],
                                                tsq_client: Callable[..., Any]) -> None:
        """§6.1 (MAY): "multiple independent exchanges to occur simultaneously over a single
        connection". Four concurrent stream exchanges on one connection, each its own stream."""
        with tsq_server() as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                await c.exchange("stream")
                results = await asyncio.gather(*(c.exchange("stream") for _ in range(4)))
                assert len({(ex.t1_raw, ex.t2_unix) for ex in results}) == 4
                assert c.reconnects == 0 and c.connected
                await c.close()

            run(go())
            assert srv.stats["connections_opened"] == 1 and srv.stats["requests_stream"] == 6
