"""tsq.stability against known series and against allantools."""

from __future__ import annotations

import allantools
import numpy as np

from tsq.stability import regular_phase, segments, stability


def test_regular_series_matches_allantools_exactly() -> None:
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(0, 1e-9, 4096))  # random-walk phase
    t = np.arange(len(x), dtype=np.float64)
    st = stability(t, x)
    _, ref_ad, _, _ = allantools.oadev(x, rate=1.0, data_type="phase", taus=st.taus_s)
    _, ref_td, _, _ = allantools.tdev(x, rate=1.0, data_type="phase", taus=st.taus_s)
    assert st.segments == 1 and len(st.taus_s) >= 8
    np.testing.assert_allclose(st.adev, ref_ad, rtol=1e-9)
    np.testing.assert_allclose(st.tdev_s, ref_td, rtol=1e-9)


def test_white_phase_noise_adev_slope_is_minus_one() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1e-6, 8192)
    st = stability(np.arange(len(x), dtype=np.float64), x)
    slope = np.polyfit(np.log(st.taus_s[:8]), np.log(st.adev[:8]), 1)[0]
    assert -1.15 < slope < -0.85, slope
    # TDEV of white phase noise falls as tau^-1/2
    tslope = np.polyfit(np.log(st.taus_s[:8]), np.log(st.tdev_s[:8]), 1)[0]
    assert -0.65 < tslope < -0.35, tslope


def test_random_walk_frequency_noise_adev_rises() -> None:
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(0, 1e-10, 8192))  # random-walk frequency
    x = np.cumsum(y)
    st = stability(np.arange(len(x), dtype=np.float64), x)
    slope = np.polyfit(np.log(st.taus_s[2:9]), np.log(st.adev[2:9]), 1)[0]
    assert 0.3 < slope < 0.7, slope  # tau^+1/2


def test_step_shows_in_mtie() -> None:
    x = np.zeros(1000)
    x[500:] = 5e-6
    st = stability(np.arange(1000, dtype=np.float64), x)
    assert all(abs(m - 5e-6) < 1e-12 for m in st.mtie_s)


def test_gap_splits_segments_and_is_not_bridged() -> None:
    t = np.concatenate([np.arange(0, 500), np.arange(5000, 5500)]).astype(np.float64)
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1e-9, len(t))
    x[500:] += 1e-3  # a 1 ms jump across the gap must not show as a step inside a segment
    tau0, segs = segments(t)
    assert tau0 == 1.0 and segs == [(0, 500), (500, 1000)]
    st = stability(t, x)
    assert st.segments == 2 and max(st.mtie_s) < 1e-7
    # uneven spacing inside a segment: interpolated onto the tau0 grid
    ph = regular_phase(np.array([0.0, 1.0, 3.0]), np.array([0.0, 1.0, 3.0]), 1.0)
    np.testing.assert_allclose(ph, [0, 1, 2, 3])
