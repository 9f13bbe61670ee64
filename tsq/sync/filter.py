"""Per-source clock filter and regression (sans-IO), after chrony's sourcestats.

A source keeps up to `max_samples` samples that passed the filter. The filter prefers low-delay
samples: a sample whose delay exceeds the window's minimum by far more than the usual excess is a
*delay spike* and is dropped; a sample whose offset disagrees with the regression's prediction by
more than both their error intervals is an *offset spike*, and several of those in a row mean the
server stepped, so the window restarts from them.

The regression is a weighted least-squares line of offset (UTC - raw) against raw time, with a weak
prior on the frequency (|freq| is a few tens of ppm for any real crystal) so that a handful of
samples taken milliseconds apart still give an honest, if wide, answer (a frequency known from
before, a drift file, replaces it with a narrower prior: `set_prior`). Weights fall with a
sample's excess delay. Absolute values stay integer ns; the fit works on floats relative to the
newest sample, so no precision is lost on offsets of ~1.7e18 ns.

How many of them the regression uses is chosen as chrony does: fit them all, and if the signs of
the residuals come in too few runs for random noise (a runs test at `runs_z` standard deviations),
the line does not fit the older samples any more (wander, a frequency change): drop the oldest
quarter and try again, down to `min_runs_window`. Dropped samples are forgotten. So the window is
long (the fit averages jitter away) while the clock behaves as a line, and short when it does not.

The error interval of a source ("distance", as NTP's root distance) is the half-width around its
offset that contains the true offset:
    weighted mean delay / 2          any path asymmetry moves a sample by at most delay/2
  + 3 x standard error of the fit at `now` (includes the frequency error times the extrapolation)
  + max_clock_error x age of the newest sample   (oscillator wander since, like chrony's maxclockerror)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Optional, Sequence

from tsq.sync.fitting import delay_weights, fit_linear_window, signs_look_random

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Sample:
    """One accepted measurement: offset of UTC from raw at the midpoint of T1 and T4."""

    raw_ns: int
    offset_ns: int
    delay_ns: int


@dataclass(frozen=True)
class FilterConfig:
    max_samples: int = 128            # longest regression window (the runs test shortens it)
    min_runs_window: int = 8          # the runs test never shrinks the window below this
    runs_z: float = 2.33              # runs below mean - z x sd: not random (one-sided 1 %)
    spike_factor: float = 4.0         # delay spike: excess > factor x median excess ...
    spike_floor_ns: int = 20_000      # ... and > this and > min_delay / 2
    spike_reset: int = 4              # this many delay spikes in a row: the path changed, accept
    step_count: int = 3               # this many offset spikes in a row: the server stepped, restart
    max_freq_ppm: float = 100.0       # 1-sigma prior on |frequency| of raw vs UTC
    max_clock_error_ppb: float = 1000.0   # oscillator wander allowance (chrony maxclockerror, 1 ppm)
    sigma_floor_ns: float = 200.0     # smallest per-sample standard deviation assumed
    k_sigma: float = 3.0              # standard errors in an error interval


@dataclass(frozen=True)
class FilterVerdict:
    accepted: bool
    reason: str                       # "ok", "delay spike ...", "offset spike ...", "step: ..."
    prediction_error_ns: Optional[float] = None   # |offset - predicted| before this sample


@dataclass(frozen=True)
class SourceEstimate:
    """A source's answer at `raw_ns`: offset (UTC - raw) and the interval around it."""

    raw_ns: int
    offset_ns: int
    freq_ppb: float                   # d(offset)/d(raw): raw runs slow by this many ppb
    freq_se_ppb: float
    offset_se_ns: float
    distance_ns: float                # half-width of the interval that contains the true offset
    jitter_ns: float                  # weighted rms residual of the fit
    min_delay_ns: int
    samples: int
    last_sample_raw: int


@dataclass(frozen=True)
class _Fit:
    ref_raw: int
    ref_offset: int
    a: float                          # offset - ref_offset at ref_raw, ns
    b: float                          # ppb (ns per s)
    var_a: float
    var_b: float
    cov_ab: float
    jitter: float
    mean_delay: float
    n: int

    def predict(self, raw_ns: int) -> tuple[float, float]:
        """(offset - ref_offset, its standard error) at raw_ns."""
        x = (raw_ns - self.ref_raw) / NS_PER_S
        var = self.var_a + 2 * x * self.cov_ab + x * x * self.var_b
        return self.a + self.b * x, math.sqrt(max(var, 0.0))


class SourceFilter:
    """The sample window and regression of one source."""

    def __init__(self, config: Optional[FilterConfig] = None) -> None:
        self.config = config or FilterConfig()
        self.samples: List[Sample] = []
        self._delays: Deque[int] = deque(maxlen=min(16, self.config.max_samples))  # recent minimum
        self._delay_spikes = 0
        self._steps: List[Sample] = []
        self._fit: Optional[_Fit] = None
        self.prior_ppb = 0.0                               # prior frequency (mean, 1 sigma)
        self.prior_sigma_ppb = self.config.max_freq_ppm * 1000.0

    def set_prior(self, freq_ppb: float, sigma_ppb: float) -> None:
        """Start the frequency from a known value (a drift file) instead of 0 +- max_freq_ppm."""
        self.prior_ppb = freq_ppb
        self.prior_sigma_ppb = max(sigma_ppb, 1e-3)
        self._refit()

    # ------------------------------------------------------------------------------ filtering
    def add(self, s: Sample) -> FilterVerdict:
        """Offer a sample; keep it if it passes the delay and offset spike filters."""
        cfg = self.config
        spike = self._delay_spike(s.delay_ns)
        self._delays.append(s.delay_ns)
        if spike is not None:
            self._delay_spikes += 1
            if self._delay_spikes < cfg.spike_reset:
                return FilterVerdict(False, spike)
            # The path itself got slower: forget the old minimum rather than starve.
            self._delays.clear()
            self._delays.append(s.delay_ns)
        self._delay_spikes = 0
        fit = self._fit
        pred_err: Optional[float] = None
        if fit is not None and fit.n >= 3:
            pred, _ = fit.predict(s.raw_ns)
            pred_err = abs((s.offset_ns - fit.ref_offset) - pred)
            tolerance = s.delay_ns / 2 + self._distance(fit, s.raw_ns) + cfg.sigma_floor_ns
            if pred_err > tolerance:
                self._steps.append(s)
                if len(self._steps) < cfg.step_count:
                    return FilterVerdict(False, f"offset spike {pred_err / 1e3:.1f} us > "
                                                f"{tolerance / 1e3:.1f} us", pred_err)
                # Consistently elsewhere: the server (or our path) stepped. Restart from them.
                self.samples = list(self._steps)
                self._steps = []
                self._refit()
                return FilterVerdict(True, f"step: window restarted ({pred_err / 1e3:.1f} us)", pred_err)
        self._steps = []
        self.samples.append(s)
        if len(self.samples) > cfg.max_samples:
            del self.samples[: len(self.samples) - cfg.max_samples]
        self._refit()
        return FilterVerdict(True, "ok", pred_err)

    def _delay_spike(self, delay: int) -> Optional[str]:
        if len(self._delays) < 3:
            return None
        ordered = sorted(self._delays)
        min_delay = ordered[0]
        excess = delay - min_delay
        median_excess = ordered[len(ordered) // 2] - min_delay
        tolerance = max(self.config.spike_factor * median_excess, self.config.spike_floor_ns,
                        min_delay / 2)
        if excess > tolerance:
            return f"delay spike {delay / 1e3:.1f} us (min {min_delay / 1e3:.1f} us)"
        return None

    def reset(self) -> None:
        """Forget everything (e.g. the source was replaced)."""
        self.samples = []
        self._delays.clear()
        self._steps = []
        self._delay_spikes = 0
        self._fit = None

    # ------------------------------------------------------------------------------ regression
    def _refit(self) -> None:
        """Fit the window, shrinking it from the old end while the residuals fail the runs test."""
        cfg = self.config
        if not self.samples:
            self._fit = None
            return

        def looks_linear(window: Sequence[Sample], fit: _Fit) -> bool:
            # Residuals below the noise floor carry no shape worth testing (rounding only).
            return fit.jitter < cfg.sigma_floor_ns or residuals_look_random(window, fit, cfg.runs_z)

        start, fit = fit_linear_window(
            self.samples, lambda w: fit_samples(w, cfg, self.prior_ppb, self.prior_sigma_ppb), looks_linear,
                                       cfg.min_runs_window)
        del self.samples[:start]
        self._fit = fit

    def _distance(self, fit: _Fit, raw_ns: int) -> float:
        cfg = self.config
        _, se = fit.predict(raw_ns)
        age = max(0, raw_ns - self.samples[-1].raw_ns) / NS_PER_S if self.samples else 0.0
        return fit.mean_delay / 2 + cfg.k_sigma * se + cfg.max_clock_error_ppb * age

    def estimate(self, now_raw: int) -> Optional[SourceEstimate]:
        """The source's offset at `now_raw` with its error interval; None without samples."""
        fit = self._fit
        if fit is None:
            return None
        pred, se = fit.predict(now_raw)
        return SourceEstimate(
            raw_ns=now_raw, offset_ns=fit.ref_offset + round(pred), freq_ppb=fit.b,
            freq_se_ppb=math.sqrt(fit.var_b), offset_se_ns=se,
            distance_ns=self._distance(fit, now_raw), jitter_ns=fit.jitter,
            min_delay_ns=min(x.delay_ns for x in self.samples), samples=len(self.samples),
            last_sample_raw=self.samples[-1].raw_ns)


def residuals_look_random(samples: Sequence[Sample], fit: _Fit, z: float) -> bool:
    """The runs test (tsq.sync.fitting) on the signs of the fit's residuals."""
    return signs_look_random([(s.offset_ns - fit.ref_offset) - fit.predict(s.raw_ns)[0] > 0
                              for s in samples], z)


def fit_samples(samples: Sequence[Sample], config: FilterConfig, prior_ppb: float = 0.0,
                prior_sigma_ppb: Optional[float] = None) -> _Fit:
    """Weighted least squares of offset against raw time with a Gaussian prior on the frequency,
    b ~ N(prior_ppb, prior_sigma_ppb) (default N(0, max_freq_ppm))."""
    ref = samples[-1]
    xs = [(s.raw_ns - ref.raw_ns) / NS_PER_S for s in samples]
    ys = [float(s.offset_ns - ref.offset_ns) for s in samples]
    # Per-sample standard deviation: a floor (the typical scatter) plus half the excess delay,
    # the most that extra queueing on one leg can move the offset.
    ws = delay_weights([s.delay_ns for s in samples], config.sigma_floor_ns)
    sw = sum(ws)
    sx = sum(w * x for w, x in zip(ws, xs))
    sxx = sum(w * x * x for w, x in zip(ws, xs))
    sy = sum(w * y for w, y in zip(ws, ys))
    sxy = sum(w * x * y for w, x, y in zip(ws, xs, ys))
    sigma = config.max_freq_ppm * 1000.0 if prior_sigma_ppb is None else prior_sigma_ppb
    prior = 1.0 / sigma ** 2
    # Normal equations with the prior's pseudo-observation b = prior_ppb.
    sxy_p = sxy + prior * prior_ppb
    det = sw * (sxx + prior) - sx * sx
    a = ((sxx + prior) * sy - sx * sxy_p) / det
    b = (sw * sxy_p - sx * sy) / det
    chi2 = sum(w * (y - a - b * x) ** 2 for w, x, y in zip(ws, xs, ys))
    n = len(samples)
    # The weights are absolute variances; inflate (never shrink) by the observed scatter.
    scale = max(1.0, chi2 / (n - 2)) if n >= 3 else 1.0
    jitter = math.sqrt(chi2 / sw) if n >= 3 else 0.0
    mean_delay = sum(w * s.delay_ns for w, s in zip(ws, samples)) / sw
    return _Fit(ref_raw=ref.raw_ns, ref_offset=ref.offset_ns, a=a, b=b,
                var_a=scale * (sxx + prior) / det, var_b=scale * sw / det,
                cov_ab=-scale * sx / det, jitter=jitter, mean_delay=mean_delay, n=n)
