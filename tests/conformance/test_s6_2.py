"""Draft-01 §6.2 Message Exchange Flow (clause table: test_draft01.py).

T1-T4 as this implementation captures them (docs/wire.md "Stream framing"): T1 and T4 are kernel
stamps of the client's datagrams, T2 the kernel stamp of the server's; on a stream, T2 and T4 are the
stamps of the packet that carried the message's last byte, whatever the FIN does.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

import pytest
from draft01_support import Ctx, open_probe, run

from tsq import clock, wire
from tsq.ntp import ntp64_to_unix_ns
from tsq.sync.exchange import Exchange, offset_delay
from tsq.testing.certs import TestPki

# T1 <= T2 <= T3 <= T4 on this machine's one clock, give or take the raw/realtime correlation and
# the server's T3 compensation (which aims just before the real departure).
ORDER_SLACK_NS = 100_000


def raw_to_unix() -> int:
    corr = clock.correlate(clock.CLOCK_REALTIME, clock.CLOCK_MONOTONIC_RAW)
    return corr.ref_ns - corr.sys_ns


class TestS6_2:
    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_all_four_timestamps_are_captured(self, tsq_server: Callable[..., Any],
                                              tsq_client: Callable[..., Any], mode: str) -> None:
        """§6.2: "Clients and servers MUST capture the following timestamps: T1 ... T2 ... T3 ...
        T4". Over real QUIC: T1/T4 are the client's kernel stamps, T2/T3 travel in the response,
        and on the one clock of this machine T1 <= T2 <= T3 <= T4."""
        with tsq_server() as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                for _ in range(3):
                    ex = await c.exchange(mode)
                    resp = c.last_response
                    assert resp is not None
                    rtu = raw_to_unix()
                    assert ex.kernel_t1 and ex.kernel_t4
                    assert ex.t2_unix == ntp64_to_unix_ns(resp.receive_ts, ex.t2_unix)
                    assert ex.t3_unix == ntp64_to_unix_ns(resp.send_ts, ex.t3_unix)
                    t1, t4 = ex.t1_raw + rtu, ex.t4_raw + rtu
                    assert t1 - ORDER_SLACK_NS <= ex.t2_unix <= ex.t3_unix <= t4 + ORDER_SLACK_NS
                await c.close()

            run(go())

    def test_offset_and_rtt_are_the_draft_formulas(self) -> None:
        """§6.2: "Round-Trip Time (RTT): (T4 - T1) - (T3 - T2)", "Clock Offset: ((T2 - T1) + (T3 -
        T4)) / 2"."""
        t1, t2, t3, t4 = 1_000, 501_000, 503_000, 4_000
        ex = Exchange(server="s", mode="stream", t1_raw=t1, t2_unix=t2, t3_unix=t3, t4_raw=t4)
        assert ex.delay_ns == (t4 - t1) - (t3 - t2) == 1_000
        assert ex.offset_ns == ((t2 - t1) + (t3 - t4)) // 2 == 499_500
        assert offset_delay(t1, t2, t3, t4) == (ex.offset_ns, ex.delay_ns)

    def test_t4_is_when_the_response_is_complete(self, tsq_server: Callable[..., Any],
                                                 tsq_client: Callable[..., Any]) -> None:
        """§6.2: "T4 (Client Records Time): The moment the client receives the TSQ Response." A
        response sent in two pieces 150 ms apart is received when its last byte is: the sample's
        round trip includes the wait (T4 is not the first packet's stamp)."""

        def split(ctx: Ctx) -> Any:
            if ctx.number == 1:
                return None
            cut = wire.SEND_TS_OFFSET   # up to T3's value: nothing complete before the second piece
            return [ctx.reply(lambda t3: ctx.honest(t3)[:cut], fin=False),
                    ctx.reply(lambda t3: ctx.honest(t3)[cut:], delay_s=0.15)]

        with tsq_server(split) as srv:
            async def go() -> Exchange:
                c = tsq_client(srv.port, timeout_s=3.0)
                ex: Exchange = await c.exchange("stream")
                await c.close()
                return ex

            ex = run(go())
        assert ex.t4_raw - ex.t1_raw >= 150_000_000

    def test_t2_is_when_the_request_is_complete(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§6.2: "T2 (Server Receive Time): The moment the server receives the TSQ Request." A
        request sent in two pieces 150 ms apart, without FIN (as the deployed client does), is
        answered, and its T2 is no earlier than the second piece."""
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    req = wire.encode_request(wire.Request(nonce=os.urandom(16)))
                    sid = p.send_stream(req[:10], fin=False)
                    await asyncio.sleep(0.15)
                    second = clock.realtime_ns()
                    p._quic.send_stream_data(sid, req[10:], end_stream=False)
                    p.transmit()
                    assert await p.until(lambda: len(p.streams.get(sid, b"")) >= 38, 3.0)
                    resp = wire.decode_response(bytes(p.streams[sid]))
                    assert isinstance(resp, wire.Response)
                    assert ntp64_to_unix_ns(resp.receive_ts, second) >= second - ORDER_SLACK_NS

            run(go())
