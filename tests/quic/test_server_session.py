"""ServerSession (sans-IO) bookkeeping that the I/O tests cannot see: many streams per connection."""

from __future__ import annotations

import time

from tsq import wire
from tsq.session.server import Answer, ServerPolicy, ServerSession, ServerStats, stamp_paths


def test_thousands_of_streams_on_one_connection_stay_cheap_and_old_ones_stay_done() -> None:
    session = ServerSession(ServerPolicy(), ServerStats(), stamp_paths(), "192.0.2.1")
    session.handshake_completed("tsq")
    request = wire.encode_request(wire.Request(nonce=bytes(16)))
    started = time.process_time()
    answered = 0
    for n in range(5000):
        assert session.stream_data(4 * n, request, True, 1_000) == []
        answered += sum(isinstance(a, Answer) for a in session.packet_done(float(n)))
    elapsed = time.process_time() - started
    assert answered == 5000
    # Streams long finished (below the remembered floor) and recent ones are both ignored.
    for old in (0, 4 * 2000, 4 * 4999):
        assert session.stream_data(old, request, True, 1_000) == []
        assert session.packet_done(6000.0) == []
    assert elapsed < 20.0  # linear: about 0.1 s here; the quadratic pruning it replaces took minutes


def test_stamp_residual_is_the_minimum_of_the_last_values() -> None:
    import random

    from tsq.session.server import StampResidual

    rng = random.Random(5)
    res = StampResidual(size=16, warm=4)
    res.margin_ns = 0
    window: list[int] = []
    for _ in range(2000):
        value = rng.randrange(0, 50_000) if rng.random() < 0.95 else rng.randrange(-5, 20_000_000)
        res.add(value)
        if 0 <= value < 10_000_000:
            window = [*window, value][-16:]
        if len(window) >= 4:
            assert res.estimate_ns == min(window)
