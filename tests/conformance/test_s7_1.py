"""Draft-01 §7.1 Security Implications of Datagram Mode (clause table: test_draft01.py).

§7.1 has no MUST; its SHOULD/MAY statements are checked where they have a behaviour.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest
from draft01_support import KEY_ID, Ctx, make_signer, make_verifier, run

from tsq.auth import Ed25519Signer
from tsq.session.errors import TsqError


class TestS7_1:
    def test_signatures_can_be_enforced_in_datagram_mode(self, tsq_server: Callable[..., Any],
                                                         tsq_client: Callable[..., Any]) -> None:
        """§7.1 (MAY): "deployments MAY enforce signature usage via the Signature Request TLV and
        validate all incoming messages against known server credentials." Signed datagram samples
        verify; a server signing with another key (same key id) gives none."""
        with tsq_server(signer=make_signer("ed25519")) as good, \
                tsq_server(signer=Ed25519Signer(KEY_ID, bytes(32))) as forger:
            async def go() -> None:
                ok = tsq_client(good.port, require_signature=True, verifier=make_verifier("ed25519"))
                assert (await ok.sample("datagram")).mode == "datagram"
                await ok.close()
                bad = tsq_client(forger.port, require_signature=True, verifier=make_verifier("ed25519"),
                                 timeout_s=0.3)
                with pytest.raises(TsqError, match="signature"):
                    await bad.exchange("datagram")
                assert bad.discarded_responses >= 1
                await bad.close()

            run(go())

    def test_duplicated_datagrams_make_one_sample(self, tsq_server: Callable[..., Any],
                                                  tsq_client: Callable[..., Any]) -> None:
        """§7.1: "Messages may be lost, reordered, or duplicated." A server that sends every
        datagram answer twice: each exchange is one sample, every copy is discarded and counted."""

        def twice(ctx: Ctx) -> Any:
            return [ctx.reply(ctx.honest), ctx.reply(lambda t3: ctx.session.sent[-1], delay_s=0.01)]

        with tsq_server(twice) as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                samples = [await c.exchange("datagram") for _ in range(3)]
                await asyncio.sleep(0.05)
                assert len({ex.t1_raw for ex in samples}) == 3
                assert c.discarded_responses == 4   # warm-up + 3 exchanges, one copy each
                await c.close()

            run(go())

    def test_reordered_datagrams_pair_by_nonce(self, tsq_server: Callable[..., Any],
                                               tsq_client: Callable[..., Any]) -> None:
        """§7.1: "Messages may be lost, reordered, or duplicated." Two concurrent datagram
        exchanges whose answers arrive in the opposite order are both valid samples."""

        def reorder(ctx: Ctx) -> Any:
            return [ctx.reply(ctx.honest, delay_s=0.15 if ctx.number == 3 else 0.0)]

        with tsq_server(reorder) as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                await c.exchange("datagram")     # requests 1 (warm-up) and 2
                late, early = await asyncio.gather(c.exchange("datagram"), c.exchange("datagram"))
                assert late.t4_raw > early.t4_raw and late.t1_raw < early.t1_raw
                assert late.delay_ns < 100_000_000 and c.discarded_responses == 0   # T3 left late too
                await c.close()

            run(go())
