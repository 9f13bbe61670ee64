"""NAT rebinding (issue 13): a carrier-grade NAT gives the gateway a new public port between polls
(QUIC connection migration on the server's side). Through a rebinding relay, in both modes: no
exchange is lost, the connection is kept, and no sample is ever wrong — every sample's offset from
the (shared) true clock stays inside half its own round trip, which a T3 paired with another
response, or a response sent to a dead mapping, would break."""

from __future__ import annotations

import asyncio
from typing import List, Tuple

import pytest

from tsq import clock
from tsq.quic.client import TsqClient, TsqError
from tsq.quic.server import ServerThread
from tsq.testing.certs import TestPki
from tsq.testing.relay import Impairment, UdpRelay

SLACK_NS = 20_000   # the clock reads around each sample


def _true_offset() -> int:
    corr = clock.correlate(clock.CLOCK_REALTIME, clock.CLOCK_MONOTONIC_RAW)
    return corr.ref_ns - corr.sys_ns


@pytest.mark.parametrize("mode", ["datagram", "stream"])
def test_rebinding_between_polls_costs_no_exchange_and_no_wrong_sample(
        pki: TestPki, server: ServerThread, mode: str) -> None:
    leg = Impairment(delay_s=0.0005)
    with UdpRelay(("127.0.0.1", server.port), forward=leg, backward=leg, seed=3,
                  rebind_every_s=0.7) as relay:
        async def go() -> Tuple[List[Tuple[int, int]], List[str], int]:
            c = TsqClient(f"127.0.0.1:{relay.port}", ca=pki.ca_cert, server_name="localhost", paired=True)
            samples: List[Tuple[int, int]] = []
            failures: List[str] = []
            for _ in range(16):
                try:
                    ex = await c.sample(mode)
                    samples.append((ex.offset_ns - _true_offset(), ex.delay_ns))
                except TsqError as exc:
                    failures.append(str(exc))
                await asyncio.sleep(0.25)
            await c.close()
            return samples, failures, c.connections

        samples, failures, connections = asyncio.run(asyncio.wait_for(go(), 90))
        rebinds = relay.counters.rebinds
    assert rebinds >= 3                       # the server really saw the client move
    assert failures == [] and connections == 1
    for error, delay in samples:
        assert abs(error) <= delay // 2 + SLACK_NS, (error, delay)
