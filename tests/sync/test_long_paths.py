"""Long and variable paths (issue 13): geostationary round trips and LTE-like delay bursts synchronise
with honest bounds, because a source's usable limit is chrony's maxdistance (3 s) on a distance that
includes half its round trip, and the holdover limit is relative to the bound at the last update."""

from __future__ import annotations

import pytest

from tsq.sync.engine import Engine
from tsq.testing.simclock import LocalClock, SimPath, SimServer, Simulation

GEO_600MS_RTT = SimPath(300_000_000, jitter_ns=5_000_000)
# 500 ms each way with 40 ms of asymmetry (an error of 20 ms no two-way exchange can see) and loss.
GEO_ASYMMETRIC = SimPath(480_000_000, back_delay_ns=520_000_000, jitter_ns=10_000_000, loss=0.05)
# Tens of ms, 10 ms asymmetry, and every ~20 s a burst of ~3 s adding ~200 ms to each leg (uplink and
# downlink bursts are independent, so a burst makes the path asymmetric by hundreds of ms).
LTE = SimPath(20_000_000, back_delay_ns=30_000_000, jitter_ns=5_000_000, loss=0.02,
              burst_every_s=20.0, burst_length_s=3.0, burst_delay_ns=200_000_000)


def run(path: SimPath, seed: int, hours: float = 4.0) -> Simulation:
    s = Simulation(Engine(), LocalClock(freq_ppm=12.0, wander_ppb_per_rt_s=1.0, seed=seed),
                   [(SimServer("a"), path)], seed=seed, timeout_s=2.0)
    s.run(hours * 3600)
    return s


@pytest.mark.parametrize("path, asymmetry_ns, bound_max_ns", [
    (GEO_600MS_RTT, 0, 400_000_000), (GEO_ASYMMETRIC, 20_000_000, 700_000_000)])
@pytest.mark.parametrize("seed", [1, 2])
def test_geostationary_links_synchronise_with_an_honest_bound(path: SimPath, asymmetry_ns: int,
                                                             bound_max_ns: int, seed: int) -> None:
    s = run(path, seed)
    summary = s.result.summary(after_s=10)
    assert summary["synchronised"] >= 0.99, summary
    assert summary["contained"] == 1.0, summary
    # The bound covers half the round trip (any asymmetry is possible), and no more than that needs.
    assert path.delay_ns < summary["bound_p50_ns"] < bound_max_ns, summary
    assert summary["p99_ns"] < asymmetry_ns + 5_000_000, summary
    st = s.engine.tracking(s.clock.raw_at(s.now), s.now)
    assert st.reason == "1 of 1 sources agree" and st.sources[0].selection == "selected"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lte_like_bursts_synchronise_with_an_honest_bound(seed: int) -> None:
    s = run(LTE, seed)
    summary = s.result.summary(after_s=10)
    assert summary["synchronised"] >= 0.99, summary
    assert summary["contained"] == 1.0, summary
    assert summary["p99_ns"] < 15_000_000, summary           # the 5 ms asymmetry, plus bursts let through
    assert summary["bound_p50_ns"] < 100_000_000, summary
    reasons = [o.reason for _, o in s.result.outcomes]
    assert sum(r.startswith("delay spike") for r in reasons) > 10   # the bursts are seen and filtered


def test_the_old_fixed_100ms_limit_is_now_chronys_maxdistance() -> None:
    engine = Engine()
    assert engine.config.max_distance_ns == 3_000_000_000
    # A source farther than maxdistance is not usable: a 4 s each way path never synchronises.
    s = Simulation(Engine(), LocalClock(seed=1), [(SimServer("a"), SimPath(4_000_000_000))], timeout_s=10.0)
    r = s.run(600)
    assert r.first_sync_s is None
    st = s.engine.tracking(s.clock.raw_at(s.now), s.now)
    assert st.reason == "1 of 1 sources reachable, none usable yet", st.reason
