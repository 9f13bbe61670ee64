"""The simulator itself: clocks invert, runs are deterministic, exchanges carry the truth."""

from __future__ import annotations

import pytest

from tsq.sync.engine import Engine
from tsq.testing.simclock import START_UNIX_NS, LocalClock, SimPath, SimServer, Simulation

NS = 1_000_000_000


def test_raw_clock_runs_at_its_frequency_and_inverts() -> None:
    c = LocalClock(freq_ppm=50.0, seed=1)
    r0, r1 = c.raw_at(START_UNIX_NS), c.raw_at(START_UNIX_NS + 1000 * NS)
    assert r1 - r0 == 1000 * NS + 50_000_000
    for t in (START_UNIX_NS + 123_456_789, START_UNIX_NS + 777 * NS + 5):
        assert abs(c.true_at(c.raw_at(t)) - t) <= 1


def test_wander_is_seeded() -> None:
    a = LocalClock(wander_ppb_per_rt_s=5.0, seed=3)
    b = LocalClock(wander_ppb_per_rt_s=5.0, seed=3)
    t = START_UNIX_NS + 5000 * NS
    assert a.raw_at(t) == b.raw_at(t) and a.freq_at(t) != 0.0


def test_exchange_offset_is_truth_plus_half_the_asymmetry() -> None:
    clock = LocalClock(freq_ppm=0.0)
    s = Simulation(Engine(), clock, [(SimServer("x"), SimPath(100_000, back_delay_ns=300_000))])
    ex, _ = s.exchange_at(SimServer("x", turnaround_ns=0), SimPath(100_000, back_delay_ns=300_000),
                          START_UNIX_NS + NS)
    true_offset = START_UNIX_NS - clock.raw0_ns
    assert ex.offset_ns == true_offset - 100_000 and ex.delay_ns == 400_000


def test_runs_are_deterministic() -> None:
    def once() -> list[int | None]:
        s = Simulation(Engine(), LocalClock(freq_ppm=3.0, wander_ppb_per_rt_s=1.0, seed=5),
                       [(SimServer("a"), SimPath(1_000_000, jitter_ns=100_000, loss=0.1))], seed=5)
        return [r.error_ns for r in s.run(900).records]
    assert once() == once()


def test_bursts_are_seeded_and_cover_about_their_share_of_time() -> None:
    from tsq.testing.bursts import BurstSchedule

    a = BurstSchedule(every_s=20.0, length_s=5.0, delay_s=0.2, seed=7)
    b = BurstSchedule(every_s=20.0, length_s=5.0, delay_s=0.2, seed=7)
    ts = [i * 0.5 for i in range(200_000)]
    flags = [a.in_burst(t) for t in ts]
    assert flags == [b.in_burst(t) for t in ts]
    share = sum(flags) / len(flags)
    assert 0.15 < share < 0.25                                 # 5 s of every ~25 s
    extras = [a.extra_s(t) for t in ts[:4000]]
    inside = [e for e, f in zip(extras, flags) if f]
    assert all(e == 0.0 for e, f in zip(extras, flags) if not f)
    assert inside and 0.1 < sum(inside) / len(inside) < 0.3    # mean 0.2 s
    assert not a.in_burst(-1.0)
    assert BurstSchedule(1.0, 1.0, 0.0).extra_s(1e6) == 0.0
    with pytest.raises(ValueError):
        BurstSchedule(0.0, 1.0, 0.1)


def test_simpath_bursts_delay_both_legs_independently() -> None:
    path = SimPath(1_000_000, burst_every_s=10.0, burst_length_s=2.0, burst_delay_ns=100_000_000)
    fwd = [path.burst_extra_ns("fwd", t * 0.25) for t in range(4000)]
    back = [path.burst_extra_ns("back", t * 0.25) for t in range(4000)]
    assert any(fwd) and any(back) and fwd != back
    assert SimPath(1_000_000).burst_extra_ns("fwd", 5.0) == 0.0
