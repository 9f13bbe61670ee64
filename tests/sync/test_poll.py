"""Poll control: burst, adaptive interval within minpoll/maxpoll, reach (tsq.sync.poll)."""

from __future__ import annotations

import pytest

from tsq.sync.poll import PollConfig, PollController

NS = 1_000_000_000


def test_burst_back_to_back_then_minpoll() -> None:
    p = PollController(PollConfig(minpoll=2, maxpoll=6, burst_samples=4, burst_max=8))
    assert p.next_poll(100) == 100
    now = 100
    for _ in range(4):
        assert p.next_poll(now) <= now            # poll at once while bursting
        now += 1_000_000
        p.on_sample(now, True, None, 1000.0)
    assert not p.bursting
    assert p.next_poll(now) == now + 4 * NS
    assert p.reach == 0b1111


def test_burst_ends_after_burst_max_tries_without_answers() -> None:
    p = PollController(PollConfig(burst_max=5))
    for i in range(5):
        p.on_timeout(i)
    assert not p.bursting and p.reach == 0


def test_interval_grows_with_good_samples_and_shrinks_on_misses() -> None:
    p = PollController(PollConfig(minpoll=0, maxpoll=4, burst_samples=1, streak=4))
    now = 0
    p.on_sample(now, True, None, 1000.0)
    for _ in range(40):
        now += p.interval_ns
        p.on_sample(now, True, 500.0, 1000.0)     # lands within the jitter: good
    assert p.poll == 4                            # capped at maxpoll
    now += p.interval_ns
    p.on_sample(now, True, 50_000.0, 1000.0)      # missed the prediction by 50x the jitter
    assert p.poll == 3
    for _ in range(10):
        p.on_sample(now, False, 80_000.0, 1000.0)  # offset spikes
    assert p.poll == 0                            # floored at minpoll


def test_reburst_after_being_unreachable() -> None:
    p = PollController(PollConfig(burst_samples=2))
    p.on_sample(0, True, None, 1.0)
    p.on_sample(0, True, None, 1.0)
    assert not p.bursting
    for i in range(8):
        p.on_timeout(i + 1)
    assert p.reach == 0
    p.on_sample(10, True, None, 1.0)
    assert p.bursting


def test_minpoll_above_maxpoll_refused() -> None:
    with pytest.raises(ValueError):
        PollController(PollConfig(minpoll=5, maxpoll=3))
