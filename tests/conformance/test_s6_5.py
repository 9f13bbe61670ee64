"""Draft-01 §6.5 QUIC Datagram Mode (clause table: test_draft01.py)."""

from __future__ import annotations

import os
from typing import Any, Callable

from draft01_support import ClientHarness, Ctx, open_probe, run, tlvs

from tsq import wire
from tsq.session.client import DATAGRAM_FALLBACK_TIMEOUTS
from tsq.session.errors import TsqTimeout
from tsq.testing.certs import TestPki

Harness = Callable[..., ClientHarness]


def silent_to_datagrams(ctx: Ctx) -> Any:
    """A server that offers DATAGRAM frames but never answers one (its streams work)."""
    return [] if ctx.stream_id is None else None


class TestS6_5:
    def test_client_retries_over_streams(self, tsq_server: Callable[..., Any],
                                         tsq_client: Callable[..., Any]) -> None:
        """§6.5: "If the server does not support DATAGRAM frames, it will not acknowledge or will
        fall back to a stream-based response. Clients MUST be prepared to retry using stream-based
        transport." A server that enables DATAGRAM frames and never answers them: `auto` gives a
        stream sample within one call, says so once, and stays on streams."""
        with tsq_server(silent_to_datagrams) as srv:
            async def go() -> None:
                c = tsq_client(srv.port, timeout_s=0.3)
                first = await c.sample("auto")
                assert first.mode == "stream" and c.fallbacks == 1
                assert [(await c.sample("auto")).mode for _ in range(3)] == ["stream"] * 3
                assert c.fallbacks == 1
                await c.close()

            run(go())
            assert srv.stats["requests_datagram"] == DATAGRAM_FALLBACK_TIMEOUTS

    def test_no_datagrams_to_a_server_without_them(self, tsq_server: Callable[..., Any],
                                                   tsq_client: Callable[..., Any]) -> None:
        """§6.5: "Clients MUST be prepared to retry using stream-based transport." A server that
        does not enable DATAGRAM frames is asked over streams from the start: no DATAGRAM is sent."""
        with tsq_server(datagrams=False) as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                assert [(await c.sample("auto")).mode for _ in range(2)] == ["stream"] * 2
                assert not c.datagrams_available
                await c.close()

            run(go())
            assert srv.stats["requests_datagram"] == 0

    def test_datagram_answer_establishes_the_mode(self, tsq_server: Callable[..., Any],
                                                  tsq_client: Callable[..., Any]) -> None:
        """§6.5: "If the server replies using a DATAGRAM, the mode is established." `auto` against
        a server that answers datagrams keeps using them."""
        with tsq_server() as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                assert [(await c.sample("auto")).mode for _ in range(3)] == ["datagram"] * 3
                assert c.fallbacks == 0
                await c.close()

            run(go())

    def test_session_falls_back_after_unanswered_datagrams(self, harness: Harness) -> None:
        """§6.5, the sans-IO rule (session constants): DATAGRAM_FALLBACK_TIMEOUTS datagram requests
        in a row unanswered while the server is heard from (its ACKs), with no datagram answer ever
        on the connection, switch the connection to streams; a server that has answered datagrams
        before is having losses, not lacking support, and keeps datagram mode."""
        h = harness()
        for _ in range(DATAGRAM_FALLBACK_TIMEOUTS):
            job = h.start("auto")
            assert h.sent().mode == "datagram"
            h.session.packet_received(h.raw)      # an ACK: the server is there
            h.expire()
            assert isinstance(h.result(job).error, TsqTimeout)
        assert len(h.fallbacks) == 1 and "§6.5" in h.fallbacks[0]
        h.start("auto")
        assert h.sent().mode == "stream"

        lossy = harness()
        job = lossy.start("auto")
        lossy.datagram(lossy.honest(lossy.sent()))
        assert lossy.result(job).exchange is not None
        for _ in range(DATAGRAM_FALLBACK_TIMEOUTS + 1):
            lossy.start("auto")
            assert lossy.sent().mode == "datagram"
            lossy.session.packet_received(lossy.raw)
            lossy.expire()
        assert lossy.fallbacks == []

    def test_same_message_format_in_both_modes(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§6.5: "The message format is identical to stream-based TSQ ... only the transport
        differs." The same request gets the same TLV sequence, the same size, in both modes."""
        with tsq_server(metadata=(("site", "lab"),), time_source=wire.TimeSourceInfo(1, 1, "gps")) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    req = wire.Request(nonce=os.urandom(16), precision=True, metadata_query=True)
                    data = wire.encode_request(wire.pad_request(req))
                    by_stream = await p.ask_stream(data)
                    by_datagram = await p.ask_datagram(data)
                assert [t for t, _ in tlvs(by_stream)] == [t for t, _ in tlvs(by_datagram)]
                assert len(by_stream) == len(by_datagram) == len(data)

            run(go())
