"""The per-source clock filter and regression (tsq.sync.filter)."""

from __future__ import annotations

import random

from tsq.sync.filter import FilterConfig, Sample, SourceFilter

NS = 1_000_000_000
BIG = 1_795_000_000 * NS - 4_321 * NS      # a realistic UTC - raw offset (~1.8e18 ns)


def line(raw: int, offset0: int, freq_ppb: float) -> int:
    return offset0 + round(freq_ppb * raw / NS)


def test_regression_recovers_offset_and_frequency_exactly_on_huge_offsets() -> None:
    f = SourceFilter()
    for i in range(12):
        raw = 5_000 * NS + i * 16 * NS
        assert f.add(Sample(raw, line(raw, BIG, -23_456.0), 100_000)).accepted
    now = 5_000 * NS + 11 * 16 * NS + 30 * NS
    est = f.estimate(now)
    assert est is not None
    assert abs(est.offset_ns - line(now, BIG, -23_456.0)) <= 2   # no precision lost at 1.8e18
    assert abs(est.freq_ppb - -23_456.0) < 0.01
    assert est.samples == 12
    # The interval is at least half the delay (any asymmetry) plus the wander allowance.
    assert est.distance_ns >= 50_000 + 1000 * 30
    assert est.distance_ns < 50_000 + 1000 * 30 + 5_000


def test_distance_contains_the_truth_under_asymmetry_and_jitter() -> None:
    rng = random.Random(7)
    f = SourceFilter()
    fails = 0
    for i in range(300):
        raw = 10_000 * NS + i * 8 * NS
        fwd = 300_000 + rng.expovariate(1 / 40_000)
        back = 900_000 + rng.expovariate(1 / 40_000)     # 600 us asymmetry
        true = line(raw, BIG, 12_000.0)
        f.add(Sample(raw, true + round((fwd - back) / 2), round(fwd + back)))
        now = raw + 4 * NS
        est = f.estimate(now)
        assert est is not None
        if abs(est.offset_ns - line(now, BIG, 12_000.0)) > est.distance_ns:
            fails += 1
    assert fails == 0


def test_delay_spike_rejected_and_persistent_path_change_accepted() -> None:
    f = SourceFilter(FilterConfig(spike_reset=4))
    for i in range(8):
        assert f.add(Sample(i * NS, BIG, 100_000 + (i % 3) * 1000)).accepted
    v = f.add(Sample(9 * NS, BIG + 400_000, 900_000))
    assert not v.accepted and v.reason.startswith("delay spike")
    assert len(f.samples) == 8
    # The route changed for good: after `spike_reset` slow samples in a row they are taken.
    verdicts = [f.add(Sample((10 + i) * NS, BIG, 900_000)).accepted for i in range(4)]
    assert verdicts == [False, False, True, True]


def test_offset_spike_then_step_restarts_the_window() -> None:
    f = SourceFilter(FilterConfig(step_count=3))
    for i in range(10):
        f.add(Sample(i * NS, BIG, 100_000))
    one = f.add(Sample(10 * NS, BIG + 5_000_000, 100_000))
    assert not one.accepted and one.reason.startswith("offset spike")
    back = f.add(Sample(11 * NS, BIG, 100_000))          # a lone spike: forgotten
    assert back.accepted
    verdicts = [f.add(Sample((12 + i) * NS, BIG + 5_000_000, 100_000)) for i in range(3)]
    assert [v.accepted for v in verdicts] == [False, False, True]
    assert verdicts[-1].reason.startswith("step")
    est = f.estimate(15 * NS)
    assert est is not None and abs(est.offset_ns - (BIG + 5_000_000)) < 1000
    assert est.samples == 3


def test_few_samples_close_together_give_a_wide_but_honest_frequency() -> None:
    f = SourceFilter(FilterConfig(max_freq_ppm=100.0))
    for i in range(4):
        raw = 1_000 * NS + i * 200_000
        f.add(Sample(raw, line(raw, BIG, 40_000.0), 50_000))
    est = f.estimate(1_000 * NS + 2 * NS)
    assert est is not None
    # 4 samples 0.2 ms apart cannot know the frequency: the prior's 100 ppm shows in the interval.
    assert est.freq_se_ppb > 50_000
    assert abs(est.offset_ns - line(1_000 * NS + 2 * NS, BIG, 40_000.0)) <= est.distance_ns


def test_runs_test_keeps_a_long_window_on_white_noise_and_shortens_it_after_a_frequency_change() -> None:
    rng = random.Random(3)
    f = SourceFilter()
    raw = 1_000 * NS
    for _ in range(100):
        raw += NS
        f.add(Sample(raw, line(raw, BIG, 5_000.0) + round(rng.gauss(0, 20_000)), 2_000_000))
    assert len(f.samples) >= 40                       # white noise: the window stays long
    change = raw
    for _ in range(40):                               # +5 ppm from here: a bend, not a step
        raw += NS
        bend = 5_000 * (raw - change) // NS
        assert f.add(Sample(raw, line(raw, BIG, 5_000.0) + bend + round(rng.gauss(0, 20_000)),
                            2_000_000)).accepted
    est = f.estimate(raw)
    assert est is not None
    assert len(f.samples) <= 48                       # most of the old line was dropped ...
    assert abs(est.freq_ppb - 10_000.0) < 1_500.0     # ... and the new frequency found
