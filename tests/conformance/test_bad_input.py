"""Bad input end to end (issue 11): every malformed response our client can meet, from a real server
over real QUIC, is rejected with a message that names the server and the reason, is counted
(`TsqClient.discarded_responses` / `.discards`, which the gateway status shows), and never becomes a
sample; the connection stays usable for the honest answers that follow.

One misbehaving server serves the whole module: its sessions (`ScriptedSession`) answer each
connection's first request (the client's warm-up) honestly and the rest as `MISBEHAVIOUR["now"]`
says. Draft clauses: §6.6 (nonce, anomalies, validation), §6.3.2 (Error TLV), §7.1 (unsolicited
datagrams); framing: docs/wire.md "Stream framing".
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from draft01_support import Ctx, Reply, ScriptedThread, run, server_config, tlv

from tsq import wire
from tsq.session.errors import TsqError, TsqInvalidResponse, TsqTimeout
from tsq.session.framing import MAX_RESPONSE_BYTES
from tsq.testing.certs import TestPki

NS = 1 << 32   # one second in ntp64 units


def retimed(data: bytes, t2: float = 0.0, t3: float = 0.0, t3_after_t2: Optional[float] = None) -> bytes:
    """`data` (an honest response) with T2/T3 moved by the given seconds, or T3 put `t3_after_t2`
    seconds after T2 (negative: before it); same length."""
    resp = wire.decode_response(data)
    assert isinstance(resp, wire.Response)
    rt = resp.receive_ts + round(t2 * NS)
    st = resp.send_ts + round(t3 * NS) if t3_after_t2 is None else rt + round(t3_after_t2 * NS)
    return wire.encode_response(dataclasses.replace(resp, receive_ts=rt, send_ts=st))


def other_nonce(h: bytes) -> bytes:
    return h[:2] + bytes(b ^ 0xFF for b in h[2:18]) + h[18:]


# What the server sends instead of its answer `h` (an honest response), and what the client's
# reason must say.
CHANGES: Dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "wrong nonce": (other_nonce, r"nonce"),
    "nonce TLV twice": (lambda h: h[:38] + h[:18] + h[38:], r"duplicate Nonce"),
    "nonce of 8 bytes": (lambda h: tlv(1, h[2:10]) + h[18:], r"nonce"),
    "only a nonce": (lambda h: h[:18], r"Receive Timestamp"),
    "no send timestamp": (lambda h: h[:28], r"Send Timestamp"),
    "T3 < T2": (lambda h: retimed(h, t3_after_t2=-0.001), r"T3 earlier than T2"),
    "round trip <= 0": (lambda h: retimed(h, t3=2.0), r"round-trip"),
    "offset beyond 24 h": (lambda h: retimed(h, t2=172_800, t3=172_800), r"offset"),
    "Error after the timestamps": (lambda h: h[:38] + wire.encode_error(1, "late"), r"Error"),
    "Error as second TLV": (lambda h: h[:18] + wire.encode_error(1, "odd"), r"Receive Timestamp"),
    "Error, reserved byte set": (lambda h: tlv(249, b"\x01\x07bad"), r"reserved|nonce"),
    "Error then timestamps": (lambda h: wire.encode_error(2, "x") + h[18:38], r"Error|nonce"),
}
MISBEHAVIOUR: Dict[str, Optional[Callable[[Ctx], List[Reply]]]] = {"now": None}


def _script(ctx: Ctx) -> Any:
    act = MISBEHAVIOUR["now"]
    return None if act is None or ctx.number == 1 else act(ctx)


@pytest.fixture(scope="module")
def server(pki: TestPki) -> Iterator[ScriptedThread]:
    srv = ScriptedThread(server_config(pki), _script).start()
    try:
        yield srv  # type: ignore[misc]
    finally:
        srv.stop()


@pytest.fixture
def misbehave(server: ScriptedThread) -> Iterator[Callable[[Optional[Callable[[Ctx], List[Reply]]]], None]]:
    def set_to(act: Optional[Callable[[Ctx], List[Reply]]]) -> None:
        MISBEHAVIOUR["now"] = act

    yield set_to
    MISBEHAVIOUR["now"] = None


async def expect_rejected(c: Any, mode: str, reason: str) -> str:
    """One exchange that must fail: counted once, named, for `reason`; no sample."""
    before = c.discarded_responses
    with pytest.raises(TsqError):
        await c.exchange(mode)
    assert c.discarded_responses == before + 1, c.discards
    why: str = c.discards[-1]
    assert c.name in why, f"discard reason does not name the server: {why!r}"
    assert re.search(reason, why, re.IGNORECASE), why
    return why


@pytest.mark.parametrize("mode", ["stream", "datagram"])
@pytest.mark.parametrize("case", sorted(CHANGES))
def test_malformed_response_is_rejected_named_and_counted(server: ScriptedThread, misbehave: Any,
                                                          tsq_client: Callable[..., Any], case: str,
                                                          mode: str) -> None:
    """Each malformed response, in each mode: no sample, one discard naming the server and the
    reason, and the next honest answer on the same connection is a sample."""
    change, reason = CHANGES[case]
    answered: List[int] = []

    def once(ctx: Ctx) -> List[Reply]:
        if answered:
            return [ctx.reply(ctx.honest)]
        answered.append(ctx.number)
        return [ctx.reply(lambda t3: change(ctx.honest(t3)))]

    misbehave(once)

    async def go() -> None:
        c = tsq_client(server.port, timeout_s=2.0)
        await c.connect()
        await expect_rejected(c, mode, reason)
        ex = await c.exchange(mode)
        assert ex.delay_ns > 0 and c.connected
        await c.close()

    run(go())


def test_no_sample_ever_from_a_server_that_always_lies(server: ScriptedThread, misbehave: Any,
                                                       tsq_client: Callable[..., Any]) -> None:
    """`sample()` and `burst()` (what `tsq sync` and `tsq query` use) give nothing from a server
    whose every answer after the warm-up has its T2 1 ms after its T3: no such answer, nor anything
    it carries (such as an interleaved report refining an earlier exchange), may end up in a
    sample; every answer is counted."""
    misbehave(lambda ctx: [ctx.reply(lambda t3: retimed(ctx.honest(t3), t2=0.001 + (t3 - ctx.t2) / NS))])

    async def go() -> None:
        c = tsq_client(server.port, timeout_s=2.0)
        got = []
        for mode in ("stream", "datagram"):
            try:
                got += await c.burst(3, mode)
            except TsqInvalidResponse as exc:
                assert "T3 earlier than T2" in str(exc)
        assert c.discarded_responses >= 6
        assert got == [], f"{len(got)} sample(s) came out of a server whose every answer was rejected"
        await c.close()

    run(go())


def test_oversized_stream_response_is_refused(server: ScriptedThread, misbehave: Any,
                                              tsq_client: Callable[..., Any]) -> None:
    """A stream response that never completes and outgrows MAX_RESPONSE_BYTES (8192) is refused
    (STOP_SENDING) instead of buffered: no sample, counted, named; the connection stays usable."""
    big = tlv(200, bytes(255)) * (MAX_RESPONSE_BYTES // 257 + 4)
    misbehave(lambda ctx: [ctx.reply(lambda t3: ctx.honest(t3)[:18] + big, fin=False)]
              if ctx.number == 2 else [ctx.reply(ctx.honest)])

    async def go() -> None:
        c = tsq_client(server.port, timeout_s=2.0)
        started = time.monotonic()
        await expect_rejected(c, "stream", r"exceeds 8192 bytes")
        assert time.monotonic() - started < 1.5   # refused as the bytes came, not at a timeout
        assert (await c.exchange("stream")).delay_ns > 0
        await c.close()

    run(go())


def test_late_fin_changes_nothing(server: ScriptedThread, misbehave: Any,
                                  tsq_client: Callable[..., Any]) -> None:
    """The deployed server's habit: its answer at once, FIN seconds later. The sample is taken
    when the answer is complete (its round trip is loopback-short, not the FIN's 1.2 s), and the
    FIN, when it comes, is no event: no discard, no error, the next exchanges are fine."""
    misbehave(lambda ctx: [ctx.reply(ctx.honest, fin=False), ctx.reply(lambda t3: b"", delay_s=1.2)])

    async def go() -> None:
        c = tsq_client(server.port, timeout_s=3.0)
        await c.connect()
        started = time.monotonic()
        ex = await c.exchange("stream")
        assert time.monotonic() - started < 1.0
        assert 0 < ex.delay_ns < 200_000_000
        await asyncio.sleep(1.5)                  # every held FIN has arrived by now
        assert (await c.exchange("stream")).delay_ns < 200_000_000
        assert c.discarded_responses == 0 and c.connected
        await c.close()

    run(go())


def test_incomplete_response_then_late_fin_is_rejected(server: ScriptedThread, misbehave: Any,
                                                       tsq_client: Callable[..., Any]) -> None:
    """Nonce and T2, no T3, FIN 0.1 s later (within the answer deadline, at least 0.25 s): at the
    FIN the response is complete and malformed: rejected, counted, named; never a sample stamped
    at the FIN."""
    misbehave(lambda ctx: [ctx.reply(lambda t3: ctx.honest(t3)[:28], fin=False),
                           ctx.reply(lambda t3: b"", delay_s=0.1)] if ctx.number == 2 else None)

    async def go() -> None:
        c = tsq_client(server.port, timeout_s=3.0)
        started = time.monotonic()
        await expect_rejected(c, "stream", r"Send Timestamp")
        assert time.monotonic() - started >= 0.1
        await c.close()

    run(go())


def test_incomplete_response_without_fin_times_out_named(server: ScriptedThread, misbehave: Any,
                                                         tsq_client: Callable[..., Any]) -> None:
    """Nonce and T2, then nothing (no T3, no FIN): the client cannot tell "not yet" from "never",
    so the exchange times out, with the server named; no sample."""
    misbehave(lambda ctx: [ctx.reply(lambda t3: ctx.honest(t3)[:28], fin=False)] if ctx.number == 2 else None)

    async def go() -> None:
        c = tsq_client(server.port, timeout_s=0.4)
        with pytest.raises(TsqTimeout) as info:
            await c.exchange("stream")
        assert c.name in str(info.value)
        await c.close()

    run(go())


@pytest.mark.parametrize("mode", ["stream", "datagram"])
def test_unsolicited_datagrams_are_discarded(server: ScriptedThread, misbehave: Any,
                                             tsq_client: Callable[..., Any], mode: str) -> None:
    """DATAGRAM frames nobody asked for (random nonces, an Error TLV, a copy of a stream answer
    carrying the stream request's nonce) come before every answer: each is discarded, counted and
    named; the real answers are the samples."""

    def noisy(ctx: Ctx) -> List[Reply]:
        stranger = os.urandom(16)
        junk = [ctx.reply(lambda t3: ctx.honest(t3)[:2] + stranger + ctx.honest(t3)[18:], datagram=True),
                ctx.reply(lambda t3: wire.encode_error(1, "unasked"), datagram=True)]
        if ctx.stream_id is not None:
            junk.append(ctx.reply(lambda t3: ctx.honest(t3), datagram=True))
        return [*junk, ctx.reply(ctx.honest)]

    misbehave(noisy)

    async def go() -> None:
        c = tsq_client(server.port)
        await c.connect()
        samples = [await c.exchange(mode) for _ in range(2)]
        await asyncio.sleep(0.5)   # let the last junk frames in, also on a loaded machine
        assert all(ex.mode == mode and ex.delay_ns > 0 for ex in samples)
        per_answer = 3 if mode == "stream" else 2   # the warm-up (request 1) is answered honestly
        assert c.discarded_responses == per_answer * 2
        assert all(c.name in why for why in c.discards), c.discards
        await c.close()

    run(go())
