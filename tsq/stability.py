"""Frequency stability of a time-error series: overlapping ADEV, TDEV and MTIE at octave taus.

The field logs are unevenly spaced (polls adapt, devices come and go, gateways lose power). The
method: the series is split into segments wherever consecutive samples are further apart than
`gap_factor` x the median spacing tau0; within each segment the phase (time error, seconds) is put
on a regular grid of step tau0 by linear interpolation; the statistics are computed per segment
with allantools (overlapping ADEV, TDEV, MTIE) and pooled across segments, weighting each
segment's variance by its number of terms (MTIE: the maximum). Taus an individual segment is too
short for are left out of that segment. This keeps gaps from being bridged by invented data while
using every piece of data that can support a given tau.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
MIN_SEGMENT = 8  # points a segment needs to enter the statistics


@dataclass
class Stability:
    """Pooled statistics per tau (seconds)."""

    tau0_s: float
    taus_s: List[float] = field(default_factory=list)
    adev: List[float] = field(default_factory=list)
    tdev_s: List[float] = field(default_factory=list)
    mtie_s: List[float] = field(default_factory=list)
    segments: int = 0


def segments(t_s: FloatArray, gap_factor: float = 3.0) -> Tuple[float, List[Tuple[int, int]]]:
    """(tau0, [(start, end)...]) of runs with no spacing above gap_factor x tau0."""
    if len(t_s) < 2:
        return 0.0, []
    dt = np.diff(t_s)
    tau0 = float(np.median(dt))
    if tau0 <= 0:
        return 0.0, []
    breaks = np.nonzero(dt > gap_factor * tau0)[0]
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks + 1, [len(t_s)]))
    return tau0, [(int(a), int(b)) for a, b in zip(starts, ends) if b - a >= 2]


def regular_phase(t_s: FloatArray, x_s: FloatArray, tau0: float) -> FloatArray:
    """Phase resampled on a tau0 grid over [t0, t_end] by linear interpolation."""
    n = int(np.floor((t_s[-1] - t_s[0]) / tau0)) + 1
    grid = t_s[0] + tau0 * np.arange(n)
    return np.asarray(np.interp(grid, t_s, x_s), dtype=np.float64)


def octave_taus(tau0: float, n: int) -> List[int]:
    """Averaging factors 1, 2, 4, ... up to a third of the series (enough terms for an estimate)."""
    out, m = [], 1
    while m <= max(1, n // 3):
        out.append(m)
        m *= 2
    return out


def stability(t_s: FloatArray, x_s: FloatArray, gap_factor: float = 3.0, max_points: int = 200_000
              ) -> Stability:
    """ADEV, TDEV and MTIE of phase `x_s` (seconds) sampled at times `t_s` (seconds, increasing)."""
    import allantools

    tau0, segs = segments(t_s, gap_factor)
    result = Stability(tau0_s=tau0, segments=len(segs))
    if not segs:
        return result
    if sum(b - a for a, b in segs) > max_points:
        # MTIE is quadratic-ish in allantools; decimate evenly, keeping the method unchanged.
        step = int(np.ceil(sum(b - a for a, b in segs) / max_points))
        t_s, x_s = t_s[::step], x_s[::step]
        tau0, segs = segments(t_s, gap_factor)
    acc: Dict[int, List[float]] = {}
    for a, b in segs:
        x = regular_phase(t_s[a:b], x_s[a:b], tau0)
        if len(x) < MIN_SEGMENT:
            continue  # too short to say anything about stability
        taus = [m * tau0 for m in octave_taus(tau0, len(x))]
        try:
            (t1, ad, _e, nad) = allantools.oadev(x, rate=1.0 / tau0, data_type="phase", taus=taus)[:4]
            (t2, td, _e2, ntd) = allantools.tdev(x, rate=1.0 / tau0, data_type="phase", taus=taus)[:4]
            (t3, mt, _e3, _n3) = allantools.mtie(x, rate=1.0 / tau0, data_type="phase", taus=taus)[:4]
        except UserWarning:  # allantools: no tau left with enough terms
            continue
        # per averaging factor: [sum adev^2*n, n, sum tdev^2*n, n, max mtie]
        for tau, v, k in zip(t1, ad, nad):
            slot = acc.setdefault(int(np.rint(tau / tau0)), [0.0] * 5)
            slot[0] += float(v) ** 2 * float(k)
            slot[1] += float(k)
        for tau, v, k in zip(t2, td, ntd):
            slot = acc.setdefault(int(np.rint(tau / tau0)), [0.0] * 5)
            slot[2] += float(v) ** 2 * float(k)
            slot[3] += float(k)
        for tau, v in zip(t3, mt):
            slot = acc.setdefault(int(np.rint(tau / tau0)), [0.0] * 5)
            slot[4] = max(slot[4], float(v))
    for m in sorted(acc):
        s = acc[m]
        if s[1] <= 0 or s[3] <= 0:
            continue
        result.taus_s.append(m * tau0)
        result.adev.append(float(np.sqrt(s[0] / s[1])))
        result.tdev_s.append(float(np.sqrt(s[2] / s[3])))
        result.mtie_s.append(s[4])
    return result
