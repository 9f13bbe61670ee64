"""Warm-up pings (sans-IO): answered by the device, counted, never measured."""

from __future__ import annotations

from tsq.bridge import frames
from tsq.bridge.device import DeviceSession
from tsq.testing.timemodels import FixedModel

NS = 1_000_000_000




def pong(seq: int, t2: int, t3: int) -> bytes:
    return frames.encode(frames.Pong(seq, t2, t3))


def test_a_warmup_ping_is_answered_but_never_enters_the_fit() -> None:
    s = DeviceSession("pty", FixedModel())
    s.opened()
    s.received(frames.encode(frames.Hello(1, 0xBEEF, (1, 0, 0), 1, 1_000_000, 0)), 0)
    assert s.hello is not None and s.fit is not None

    warm = s.make_ping(10 * NS, warmup=True)
    assert warm is not None
    assert s.sent(warm[0], 10 * NS) is None
    assert s.received(pong(warm[0], 10_000_050, 10_000_060), 10 * NS + 200_000) == []
    assert s.pongs == 1 and s.fit.accepted == 0           # answered, not measured

    ping = s.make_ping(10 * NS + 2_000_000)
    assert ping is not None
    s.sent(ping[0], 10 * NS + 2_000_000)
    done = s.received(pong(ping[0], 10_002_050, 10_002_060), 10 * NS + 2_110_000)
    assert len(done) == 1 and s.fit.accepted == 1         # the measured one is
    assert s.pongs == 2
