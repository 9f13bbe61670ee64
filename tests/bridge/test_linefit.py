"""Regression of device ticks against raw ns (sans-IO), on synthetic pings with known truth."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tsq.bridge.linefit import LineFit, PingSample

TICK_HZ = 1_000_000


def make_ping(
    rng: random.Random, raw: int, ppm: float, tick0: int, delay_ns: int, jitter_ns: int
) -> PingSample:
    """A ping whose device clock runs `ppm` fast, with symmetric delays plus one-sided jitter."""
    def ticks(at_raw: int) -> int:
        return tick0 + int(at_raw * (1 + ppm * 1e-6) * TICK_HZ // 1_000_000_000)

    up = delay_ns // 2 + rng.randrange(jitter_ns + 1)
    down = delay_ns // 2 + rng.randrange(jitter_ns + 1)
    t2 = ticks(raw + up)
    t3 = t2 + 50  # 50 µs turnaround
    t3_raw = raw + up + round(50_000 / (1 + ppm * 1e-6))
    return PingSample(raw, t2, t3, t3_raw + down)


def test_recovers_frequency_and_mapping() -> None:
    rng = random.Random(1)
    fit = LineFit(TICK_HZ)
    base = 10**15
    for i in range(40):
        r = fit.add(make_ping(rng, 1_000_000_000 * i, 50.0, 123_456, 200_000, 5_000))
        assert r.line_delay_ns >= 200_000 - 2_000
    assert fit.ready
    assert abs(fit.freq_ppm - 50.0) < 1.0  # type: ignore[operator]
    # Truth at raw 40.5 s: ticks = tick0 + raw * (1 + 50e-6) / 1000
    raw = 40_500_000_000
    truth = 123_456 + raw * (1 + 50e-6) / 1000
    got = fit.ticks_at(raw)
    assert got is not None and abs(got - truth) <= 10  # 10 µs at 1 MHz ticks
    bound = fit.line_bound_ns(raw)
    assert bound is not None and bound >= abs(got - truth) * 1000
    assert fit.raw_at(got) is not None and abs(fit.raw_at(got) - raw) < 2_000  # type: ignore[operator]
    del base


def test_delay_outliers_are_rejected() -> None:
    rng = random.Random(2)
    fit = LineFit(TICK_HZ, delay_gate_ns=50_000)
    for i in range(10):
        fit.add(make_ping(rng, 1_000_000_000 * i, -20.0, 0, 100_000, 1_000))
    r = fit.add(make_ping(rng, 10_000_000_000, -20.0, 0, 5_000_000, 0))
    assert not r.accepted and r.reason == "delay outlier"
    assert fit.rejected == 1


def test_inconsistent_stamps_rejected_and_reset() -> None:
    fit = LineFit(TICK_HZ)
    r = fit.add(PingSample(t1_raw=1000, t2_ticks=50, t3_ticks=40, t4_raw=2000))
    assert not r.accepted and r.reason == "inconsistent stamps"
    fit.add(PingSample(0, 100, 110, 20_000))
    assert fit.ticks_at(10_000) is not None
    fit.reset()
    assert fit.ticks_at(10_000) is None and not fit.ready


@given(st.lists(st.tuples(st.integers(-2**62, 2**62), st.integers(-2**40, 2**62),
                          st.integers(0, 10**9), st.integers(-10**6, 10**10)), max_size=30))
def test_add_never_raises(rows: list[tuple[int, int, int, int]]) -> None:
    fit = LineFit(TICK_HZ)
    for t1, t2, turn, rtt in rows:
        fit.add(PingSample(t1, t2, t2 + turn, t1 + rtt))
        fit.ticks_at(t1)
        fit.line_bound_ns(t1)


def test_low_delay_pings_dominate_the_fit() -> None:
    """Half the pings wait up to 150 µs on the forward leg only (under the delay gate): an
    unweighted line would be off by ~20 µs; weighting by excess delay keeps it within a few."""
    rng = random.Random(5)
    fit = LineFit(TICK_HZ)
    ppm = 50.0

    def ticks(at_raw: int) -> int:
        return 7_000 + int(at_raw * (1 + ppm * 1e-6) * TICK_HZ // 1_000_000_000)

    for i in range(128):
        raw = 1_000_000_000 * (i + 1)
        up = 50_000 + rng.randrange(2_000) + (rng.randrange(150_000) if i % 2 else 0)
        down = 50_000 + rng.randrange(2_000)
        t2 = ticks(raw + up)
        fit.add(PingSample(raw, t2, t2 + 50, raw + up + 50_000 + down))
    at = 128_500_000_000
    got = fit.ticks_at(at)
    assert got is not None and abs(got - ticks(at)) <= 5      # µs at 1 MHz ticks
    bound = fit.line_bound_ns(at)
    assert bound is not None and bound >= abs(got - ticks(at)) * 1000


def test_window_shrinks_when_the_crystal_changes_frequency() -> None:
    """A +2 ppm step after 100 pings: the runs test drops the old line instead of averaging it in."""
    rng = random.Random(6)
    fit = LineFit(TICK_HZ)
    change = 100_000_000_000

    def ticks(at_raw: int) -> int:
        bend = max(0, at_raw - change) * 2e-6
        return int((at_raw * (1 + 20e-6) + bend) * TICK_HZ // 1_000_000_000)

    for i in range(160):
        raw = 1_000_000_000 * (i + 1)
        up, down = 50_000 + rng.randrange(10_000), 50_000 + rng.randrange(10_000)
        t2 = ticks(raw + up)
        fit.add(PingSample(raw, t2, t2 + 50, raw + up + 50_000 + down))
    assert fit.points < 100                                    # the pre-change pings are gone
    assert abs(fit.freq_ppm - 22.0) < 0.5  # type: ignore[operator]
