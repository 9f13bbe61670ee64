"""Regression of a device's tick counter against raw ns, from four-timestamp pings (sans-IO).

A ping gives T1 (raw ns, request left the host), T2 and T3 (device ticks, request in, reply out) and
T4 (raw ns, reply in). With equal-length frames the serialisation time is the same both ways, so the
device instant (T2+T3)/2 matches the raw instant (T1+T4)/2 up to the line's asymmetry, which is at
most half the line delay (T4-T1)-(T3-T2). The fit is a weighted least-squares line through those
midpoints. A ping that waited (in a UART FIFO, a USB frame, a scheduler queue) says less about the
clocks, so weights fall with a ping's excess delay over the window's minimum, as in the sync engine:
`1 / (sigma0 + excess/2)^2`, sigma0 = max(`sigma_floor_ns`, half the median excess); pings far
beyond the recent minimum (`delay_gate_ns`) are dropped outright.

The window is long (up to `window` pings: on a pty at 1 ping/s the scatter of single pings is tens
of µs, and averaging 128 of them is what brings the line to a few µs) and sized by the runs test of
`tsq.sync.fitting`, as the engine's is: when the residuals' signs show a shape (the crystal's frequency
moved with temperature) the oldest quarter goes, down to `min_runs_window` pings.
Nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional, Sequence, Tuple

from tsq.sync.fitting import delay_weights, fit_linear_window, signs_look_random

NS_PER_S = 1_000_000_000

# A fitted line: (xc, yc, k, frac, sigma_ticks, sxx, n), ticks = yc + frac + k * (raw - xc).
_Line = Tuple[int, int, float, float, float, float, int]


@dataclass(frozen=True)
class PingSample:
    """One completed ping: host stamps in raw ns, device stamps in device ticks."""

    t1_raw: int
    t2_ticks: int
    t3_ticks: int
    t4_raw: int


@dataclass(frozen=True)
class FitResult:
    """What `LineFit.add` says about one ping."""

    accepted: bool          # used in the fit (False: delay outlier or inconsistent stamps)
    reason: str             # "" when accepted, else why not
    residual_ns: int        # the ping's midpoint offset from the fit before it was added (0 if no fit)
    line_delay_ns: int      # round trip minus the device's turnaround


@dataclass(frozen=True)
class _Point:
    x: int        # raw ns midpoint
    y: int        # device ticks midpoint
    delay_ns: int


class LineFit:
    """Sliding-window regression `ticks = y0 + k * (raw - x0)` with delay filtering and stats."""

    def __init__(
        self,
        tick_hz: int,
        window: int = 128,
        delay_gate_ns: int = 200_000,
        min_points: int = 4,
        max_ppm: float = 1000.0,
        min_runs_window: int = 16,
        sigma_floor_ns: float = 2_000.0,
    ) -> None:
        if tick_hz <= 0:
            raise ValueError("tick_hz must be positive")
        self.tick_hz = tick_hz
        self.window = window
        self.delay_gate_ns = delay_gate_ns
        self.min_points = min_points
        self.max_ppm = max_ppm
        self.min_runs_window = min_runs_window
        self.sigma_floor_ns = sigma_floor_ns
        self._points: Deque[_Point] = deque(maxlen=window)
        self._delays: Deque[int] = deque(maxlen=min(window, 32))  # the recent minimum, for the gate
        self._fit: Optional[_Line] = None
        self.accepted = 0
        self.rejected = 0

    # -- input -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (a device reset: its tick counter started again)."""
        self._points.clear()
        self._delays.clear()
        self._fit = None

    def ticks_to_ns(self, ticks: int) -> float:
        """A tick count converted to ns at the nominal tick rate."""
        return ticks * NS_PER_S / self.tick_hz

    def add(self, s: PingSample) -> FitResult:
        """Take one ping; returns whether it was used, its residual and its line delay."""
        turnaround = s.t3_ticks - s.t2_ticks
        rtt = s.t4_raw - s.t1_raw
        delay = round(rtt - self.ticks_to_ns(turnaround))
        if turnaround < 0 or rtt < 0 or delay < -1000:
            self.rejected += 1
            return FitResult(False, "inconsistent stamps", 0, delay)
        delay = max(delay, 0)
        x = (s.t1_raw + s.t4_raw) // 2
        y = (s.t2_ticks + s.t3_ticks) // 2
        residual = self._residual_ns(x, y) if self._fit is not None else 0
        self._delays.append(delay)
        floor = min(self._delays)
        if delay > floor + self.delay_gate_ns:
            self.rejected += 1
            return FitResult(False, "delay outlier", residual, delay)
        if self._points and (x <= self._points[-1].x or y <= self._points[-1].y):
            self.rejected += 1
            return FitResult(False, "time went backwards", residual, delay)
        self._points.append(_Point(x, y, delay))
        self.accepted += 1
        self._refit()
        return FitResult(True, "", residual, delay)

    # -- the fit -------------------------------------------------------------------------------
    def _refit(self) -> None:
        pts = list(self._points)
        if len(pts) < 2:
            # One point: nominal rate through it, so the device can be served a first timescale.
            p = pts[0]
            self._fit = (p.x, p.y, self.tick_hz / NS_PER_S, 0.0, 0.0, 0.0, 1)
            return
        start, self._fit = fit_linear_window(pts, self._fit_window, self._looks_linear, self.min_runs_window)
        if self._fit is not None:   # no line at all (rate out of range): keep the points
            for _ in range(start):
                self._points.popleft()

    def _fit_window(self, pts: Sequence[_Point]) -> Optional[_Line]:
        fit = self._solve(pts)
        if fit is not None and len(pts) >= 4:
            # One pass of outlier removal: a point far off the line (several times the median
            # residual) is a stamp that was delayed on one side only.
            x0, y0, k = fit[0], fit[1], fit[2]
            res = [abs((p.y - y0) - k * (p.x - x0)) for p in pts]
            med = sorted(res)[len(res) // 2]
            limit = max(5.0 * med, 1e-9 * self.tick_hz * 2000)  # floor: 2 µs in ticks
            kept = [p for p, r in zip(pts, res) if r <= limit]
            if len(kept) >= 2 and len(kept) < len(pts):
                fit = self._solve(kept) or fit
        return fit

    def _looks_linear(self, pts: Sequence[_Point], fit: Optional[_Line]) -> bool:
        if fit is None:
            return True   # nothing to test: stop shrinking
        xc, yc, k, frac, sigma_ticks, _sxx, _n = fit
        if sigma_ticks * NS_PER_S / self.tick_hz < self.sigma_floor_ns:
            return True   # scatter at the noise floor: no shape worth testing (tick rounding only)
        return signs_look_random([(p.y - yc) - frac - k * (p.x - xc) > 0 for p in pts])

    def _solve(self, pts: Sequence[_Point]) -> Optional[_Line]:
        n = len(pts)
        x0, y0 = pts[0].x, pts[0].y
        ws = delay_weights([p.delay_ns for p in pts], self.sigma_floor_ns)
        norm = n / sum(ws)              # weights scaled to mean 1: sigma below is per unit weight
        ws = [w * norm for w in ws]
        xs = [float(p.x - x0) for p in pts]
        ys = [float(p.y - y0) for p in pts]
        mx = sum(w * x for w, x in zip(ws, xs)) / n
        my = sum(w * y for w, y in zip(ws, ys)) / n
        sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs))
        if sxx <= 0:
            return None
        k = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys)) / sxx
        nominal = self.tick_hz / NS_PER_S
        if abs(k / nominal - 1.0) > self.max_ppm * 1e-6:
            return None
        # Re-centre on the weighted mean so the intercept and slope errors are independent.
        xc = x0 + round(mx)
        dy = my + k * (round(mx) - mx)   # small: keep the big integer part out of the float
        yc = y0 + math.floor(dy)
        frac = dy - math.floor(dy)
        sse = sum(w * ((y - my) - k * (x - mx)) ** 2 for w, x, y in zip(ws, xs, ys))
        sigma_ticks = math.sqrt(sse / (n - 2)) if n > 2 else 0.0
        return (xc, yc, k, frac, sigma_ticks, sxx, n)

    def _residual_ns(self, x: int, y: int) -> int:
        """Device midpoint minus the fit's prediction, in ns (positive: device ahead)."""
        assert self._fit is not None
        xc, yc, k, frac, _s, _sxx, _n = self._fit
        pred = (x - xc) * k + frac
        return round(self.ticks_to_ns(y - yc) - pred * NS_PER_S / self.tick_hz)

    # -- queries -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Enough accepted pings for a fit worth serving."""
        return self._fit is not None and self._fit[6] >= self.min_points

    @property
    def points(self) -> int:
        return 0 if self._fit is None else self._fit[6]

    def ticks_at(self, raw_ns: int) -> Optional[int]:
        """The device's tick count at raw instant `raw_ns` (None before the first ping)."""
        if self._fit is None:
            return None
        xc, yc, k, frac, _s, _sxx, _n = self._fit
        return yc + round((raw_ns - xc) * k + frac)

    def raw_at(self, ticks: int) -> Optional[int]:
        """The raw ns at which the device's counter reads `ticks` (None before the first ping)."""
        if self._fit is None:
            return None
        xc, yc, k, frac, _s, _sxx, _n = self._fit
        return xc + round((ticks - yc - frac) / k)

    @property
    def ticks_per_raw_ns(self) -> Optional[float]:
        return None if self._fit is None else self._fit[2]

    @property
    def freq_ppm(self) -> Optional[float]:
        """The device oscillator's frequency error against the raw clock, in ppm."""
        if self._fit is None:
            return None
        return (self._fit[2] * NS_PER_S / self.tick_hz - 1.0) * 1e6

    @property
    def residual_rms_ns(self) -> Optional[float]:
        """Scatter of the accepted pings about the line, in ns."""
        if self._fit is None:
            return None
        return self._fit[4] * NS_PER_S / self.tick_hz

    @property
    def min_delay_ns(self) -> Optional[int]:
        return min(self._delays) if self._delays else None

    def line_bound_ns(self, raw_ns: int) -> Optional[int]:
        """Bound on |ticks_at(raw_ns) - truth| expressed in ns.

        Half the smallest line delay (the worst asymmetry a ping cannot see), plus three standard
        errors of the fitted line at `raw_ns` (intercept and slope), plus one tick of quantisation.
        """
        if self._fit is None or not self._delays:
            return None
        xc, _yc, _k, _frac, sigma, sxx, n = self._fit
        asym = min(self._delays) / 2
        tick_ns = NS_PER_S / self.tick_hz
        if n >= 3 and sxx > 0:
            se = sigma * math.sqrt(1.0 / n + (raw_ns - xc) ** 2 / sxx)
            fit_err = 3.0 * se * tick_ns
        else:
            # Too few points for statistics: the nominal-rate guess may be off by max_ppm.
            fit_err = self.max_ppm * 1e-6 * abs(raw_ns - xc)
        return math.ceil(asym + fit_err + tick_ns)
