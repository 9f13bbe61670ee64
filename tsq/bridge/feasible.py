"""The clock relation a window of pings allows: a feasible region in (offset, rate), sans-IO.

A ping gives T1 (raw ns, the PING's first byte handed to the kernel), T2 and T3 (device ticks, the
PING's last byte in, the PONG's first byte out) and T4 (raw ns, the PONG's last byte in). Write the
device's clock as raw = c + m * ticks. Whatever the line did to the frames, the PING reached the
device no earlier than T1 + `min_out_ns` (its serialisation) and the PONG left it no later than
T4 - `min_back_ns` (serialisation and any fixed receive delay), so every ping bounds the line from
both sides:

    c + m * (T2 + 1) >= T1 + min_out        (a counter reads T2 until tick T2 + 1)
    c + m * T3       <= T4 - min_back

Over a window the half-planes intersect in a convex polygon in (c, m) (the 2-D linear programme of
Paxson's and of Moon, Skelly and Towsley's clock-skew estimators). A ping's delays beyond the
minimums only loosen its own constraints, so the pings that happened to wait least decide the
region: with delays quantised to a USB frame or a latency timer some pings land close to the
minimum on each side, and the region shrinks like 1/N, where a least-squares line through the
midpoints averages the quantisation down like 1/sqrt(N) only.

The estimate is the centre of the region's extent (min and max over its vertices) at the newest
ping, with the rate that also centres it one `horizon_ns` later (`anchor="centre"`). On a link
whose back leg never reaches its minimum (`anchor="out"`: USB, where the PONG waits for the USB
frame after the one that carried the PING, so its wait is set by the device's turnaround, not by
chance) the back constraints stay loose by most of a frame and the centre sits half of that from
the truth; there the estimate keeps the centre's rate and takes the offset of the tightest PING-leg
constraint at that rate (the edge the dithered pings pin down, as in Moon, Skelly and Towsley's
one-way estimator), at the leg's nominal minimum (`anchor_out_ns`). With `usb_frame_ns` it goes
further where the T4s show the USB frame grid (`_on_frame_grid`): each PING is placed in the frame
after its T1 and the estimate is the line through the placements, kept inside the region at the
newest ping. The estimate need not be a line of the region: the bound at raw time t is the
largest distance of any vertex's line from the estimate at t, plus `wander_ppb` times the time since
the newest ping, plus 1.5 ticks (the device's counter truncates; t0 is rounded). If the true line
is in the region (delays no shorter than the minimums, rate within `max_ppm` of nominal, frequency
within `wander_ppb` over the window), the bound covers the truth, always.

Frequency wander: each constraint is loosened by `wander_ppb` times its age before the newest ping,
which keeps the line tangent at the newest ping feasible while the frequency stays within
`wander_ppb` of its present value over the window. A larger change (or a bad stamp) empties the
region once a ping's slack is smaller than the offset the change has built up (with 1 ms quanta a
5 ppm step takes tens of seconds; no estimator sees it sooner, and until then the bound may not
hold). A ping that conflicts with the window is held back: one stamping glitch does not throw the
window away. At `conflicts_to_restart` conflicting pings in a row the window before them is dropped
and the oldest of them too until the region is feasible again (`empty_resets`).

Numbers: raw ns are ~1e18 and ticks up to 2^64, so everything is computed from integer offsets to the
window's oldest ping, with c in ns (relative to the nominal rate) and the rate r = m - nominal in ns
per nominal second: both stay far inside float64's exact range for a window of minutes.
Nothing here reads a clock.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Optional, Sequence, Tuple

NS_PER_S = 1_000_000_000
_EPS_NS = 0.5          # every constraint loosened by this much: float rounding never excludes the truth
_LIMIT = 2**256        # stamps and queries beyond this are nonsense (and would overflow a float)

_Vertex = Tuple[float, float]    # (r: ns per nominal second off nominal, c: ns)
ANCHORS = ("centre", "out")      # where in the region the estimate sits (see the module doc)
GRID_MIN_PINGS = 8
GRID_EDGE_QUANTILE = 0.9


@dataclass(frozen=True)
class PingSample:
    """One completed ping: host stamps in raw ns, device stamps in device ticks."""

    t1_raw: int
    t2_ticks: int
    t3_ticks: int
    t4_raw: int


@dataclass(frozen=True)
class FitResult:
    """What `FeasibleFit.add` says about one ping."""

    accepted: bool          # in the window now (False: rejected, or held back as a conflict)
    reason: str             # "" when accepted, else why not
    residual_ns: int        # host midpoint minus the estimate's raw time at the device midpoint
    line_delay_ns: int      # round trip minus the device's turnaround


@dataclass(frozen=True)
class _Region:
    x0: int                 # raw ns origin (the window's oldest T1)
    y0: int                 # tick origin (the window's oldest T2)
    vertices: Tuple[_Vertex, ...]
    s_new: float            # the newest ping's T3, in nominal seconds from y0
    r: float                # the estimate: raw - x0 = c + (NS_PER_S + r) * s, s = (ticks - y0) / tick_hz
    c: float
    width_ns: float         # the region's extent in offset at s_new


class FeasibleFit:
    """Sliding-window feasible region of the line raw = c + m * ticks, its centre and its bound.

    `window` pings at most, none older than `max_age_ns` before the newest; results from
    `min_points` pings on. ValueError on nonsense parameters; `add` and the queries take any ints.
    """

    def __init__(
        self,
        tick_hz: int,
        min_out_ns: int = 0,
        min_back_ns: int = 0,
        window: int = 256,
        max_age_ns: int = 600 * NS_PER_S,
        min_points: int = 4,
        max_ppm: float = 1000.0,
        wander_ppb: float = 10.0,
        horizon_ns: int = NS_PER_S,
        max_rtt_ns: int = 10 * NS_PER_S,
        conflicts_to_restart: int = 2,
        anchor: str = "centre",
        anchor_out_ns: Optional[int] = None,
        usb_frame_ns: int = 0,
        anchor_back_ns: Optional[int] = None,
    ) -> None:
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}")
        if tick_hz <= 0:
            raise ValueError("tick_hz must be positive")
        if min_out_ns < 0 or min_back_ns < 0:
            raise ValueError("minimum delays must not be negative")
        if window < 2 or max_age_ns <= 0 or min_points < 1 or horizon_ns <= 0 or max_rtt_ns <= 0:
            raise ValueError("window >= 2, min_points >= 1 and positive ages/horizon/rtt required")
        if not 0 < max_ppm < 100_000 or not 0 <= wander_ppb < 1e6 or conflicts_to_restart < 1:
            raise ValueError("max_ppm in (0, 1e5), wander_ppb in [0, 1e6), conflicts_to_restart >= 1")
        self.tick_hz = tick_hz
        self.min_out_ns = min_out_ns
        self.min_back_ns = min_back_ns
        self.window = window
        self.max_age_ns = max_age_ns
        self.min_points = min_points
        self.max_ppm = max_ppm
        self.wander_ppb = wander_ppb
        self.horizon_ns = horizon_ns
        self.max_rtt_ns = max_rtt_ns
        self.conflicts_to_restart = conflicts_to_restart
        self.anchor = anchor
        self.usb_frame_ns = usb_frame_ns   # >0 with anchor "out": read the estimate off the frame grid
        # The host's own read latency (tsq.bridge.readprobe), taken off the grid's phase read from
        # the T4s: set by the I/O edge as it is measured; 0 where unknown.
        self.read_latency_ns = 0
        # The PING leg's nominal minimum, where `min_out_ns` was shortened to stay a true minimum
        # (a UART up to a few % fast): the bound needs the shortest, the estimate the likeliest.
        self.anchor_out_ns = min_out_ns if anchor_out_ns is None else max(min_out_ns, anchor_out_ns)
        self.anchor_back_ns = min_back_ns if anchor_back_ns is None else max(min_back_ns, anchor_back_ns)
        self._points: Deque[PingSample] = deque()
        self._held: List[PingSample] = []     # recent pings that conflicted with the window
        self._region: Optional[_Region] = None
        self._delays: Deque[int] = deque(maxlen=32)
        self.accepted = 0
        self.rejected = 0       # inconsistent stamps, time backwards, faster than the link allows
        self.conflicts = 0      # pings held back because they emptied the region
        self.empty_resets = 0   # times the oldest pings were dropped to make the region feasible

    # -- input -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (a device reset: its tick counter started again)."""
        self._points.clear()
        self._held.clear()
        self._delays.clear()
        self._region = None

    def add(self, s: PingSample) -> FitResult:
        """Take one ping; returns whether it is in the window, its residual and its line delay."""
        turnaround, rtt = s.t3_ticks - s.t2_ticks, s.t4_raw - s.t1_raw
        delay = rtt - turnaround * NS_PER_S // self.tick_hz
        max_turn = self.max_rtt_ns * self.tick_hz // NS_PER_S
        huge = max(abs(s.t1_raw), abs(s.t2_ticks)) > _LIMIT
        if huge or turnaround < 0 or rtt < 0 or rtt > self.max_rtt_ns or turnaround > max_turn:
            return self._reject("inconsistent stamps", 0, delay)
        residual = self._residual_ns(s)
        last = self._points[-1] if self._points else None
        if last is not None and (s.t1_raw <= last.t1_raw or s.t2_ticks <= last.t2_ticks):
            return self._reject("time went backwards", residual, delay)
        if self._solve([s]) is None:
            return self._reject("faster than the link allows", residual, delay)
        self._delays.append(max(0, delay))
        pts = self._trimmed(list(self._points), s)
        region = self._solve(pts)
        if region is None:
            self._held.append(s)
            if len(self._held) < self.conflicts_to_restart:
                self.conflicts += 1
                return FitResult(False, "conflicts with the window", residual, delay)
            pts = self._restart(self._held[:-1], s)
            region = self._solve(pts)
            self.empty_resets += 1
        self._held.clear()
        self._points = deque(pts)
        self._region = region
        self.accepted += 1
        return FitResult(True, "", residual, delay)

    def _reject(self, reason: str, residual: int, delay: int) -> FitResult:
        self.rejected += 1
        return FitResult(False, reason, residual, delay)

    def _trimmed(self, pts: List[PingSample], s: PingSample) -> List[PingSample]:
        """The window with `s` appended, cut to `window` pings and `max_age_ns`."""
        pts.append(s)
        start = max(0, len(pts) - self.window)
        while start < len(pts) - 1 and s.t1_raw - pts[start].t1_raw > self.max_age_ns:
            start += 1
        return pts[start:]

    def _restart(self, held: List[PingSample], s: PingSample) -> List[PingSample]:
        """The longest feasible tail of the held pings + [s]: the window before them is dropped.

        Not just its oldest pings: the longest feasible tail of window + held still holds pings from
        just before a frequency change, which a line bent towards them reconciles with the new
        ones, and they would bias the region (outside its bound) until they aged out."""
        cand: List[PingSample] = []
        for p in held:
            if not cand or (p.t1_raw > cand[-1].t1_raw and p.t2_ticks > cand[-1].t2_ticks):
                cand.append(p)
        while cand and not (s.t1_raw > cand[-1].t1_raw and s.t2_ticks > cand[-1].t2_ticks):
            cand.pop()
        pts = self._trimmed(cand, s)
        # Dropping older pings only removes constraints, so feasibility is monotone in the cut:
        # bisect for the smallest cut that is feasible (the last ping alone is, checked in add).
        lo, hi = 0, len(pts) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._solve(pts[mid:]) is not None:
                hi = mid
            else:
                lo = mid + 1
        return pts[lo:]

    # -- the region -------------------------------------------------------------------------
    def _solve(self, pts: Sequence[PingSample]) -> Optional[_Region]:
        """The feasible region of `pts` (oldest first), or None when it is empty."""
        hz, x0, y0 = self.tick_hz, pts[0].t1_raw, pts[0].t2_ticks
        big_r = self.max_ppm * 1000.0          # ns per second
        s_new = (pts[-1].t3_ticks - y0) / hz
        lows: List[Tuple[float, float]] = []   # c + r * a >= lo
        highs: List[Tuple[float, float]] = []  # c + r * b <= hi
        for p in pts:
            a_ticks, b_ticks = p.t2_ticks + 1 - y0, p.t3_ticks - y0
            a, b = a_ticks / hz, b_ticks / hz
            # Offsets from the nominal line, exact in integers and divided once.
            lo = ((p.t1_raw + self.min_out_ns - x0) * hz - a_ticks * NS_PER_S) / hz
            hi = ((p.t4_raw - self.min_back_ns - x0) * hz - b_ticks * NS_PER_S) / hz
            lows.append((a, lo - self.wander_ppb * max(0.0, s_new - a) - _EPS_NS))
            highs.append((b, hi + self.wander_ppb * max(0.0, s_new - b) + _EPS_NS))
        c_min = max(lo - big_r * abs(a) for a, lo in lows)
        c_max = min(hi + big_r * abs(b) for b, hi in highs)
        if not c_min <= c_max:
            return None
        poly: List[_Vertex] = [(-big_r, c_min), (big_r, c_min), (big_r, c_max), (-big_r, c_max)]
        # (The lows alone never empty it: with every a >= 0, (big_r, c_max) satisfies them all.)
        cuts = [(-a, -1.0, -lo) for a, lo in lows] + [(b, 1.0, hi) for b, hi in highs]
        for kr, kc, g in cuts:
            poly = _clip(poly, kr, kc, g)
            if not poly:
                return None
        h = self.horizon_ns / NS_PER_S

        def extent(at: float) -> Tuple[float, float]:
            xs = [c + r * at for r, c in poly]
            return min(xs), max(xs)

        lo0, hi0 = extent(s_new)
        loh, hih = extent(s_new + h)
        mid0, midh = (lo0 + hi0) / 2, (loh + hih) / 2
        r_est = (midh - mid0) / h
        # Each side was widened by its leg's shortening (nominal minus the minimum kept for the
        # bound); the likeliest line is the centre of the region the nominal minimums give. The
        # PONG leg of a UART also carries the receive timeout, so the two shortenings differ.
        c_est = mid0 - r_est * s_new + ((self.anchor_out_ns - self.min_out_ns)
                                        - (self.anchor_back_ns - self.min_back_ns)) / 2
        if self.anchor == "out":
            # The tightest PING-leg constraint at the centre's rate, never beyond the tightest PONG-leg
            # one (where they cross at that rate, the rate is off: the nearest line the PONGs allow).
            c_out = max(lo - r_est * a for a, lo in lows) + (self.anchor_out_ns - self.min_out_ns)
            c_est = min(c_out, min(hi - r_est * b for b, hi in highs))
            grid = self._on_frame_grid(pts, x0, y0, (s_new, lo0, hi0))
            if grid is not None:
                r_est, c_est = grid
        return _Region(x0, y0, tuple(poly), s_new, r_est, c_est, hi0 - lo0)

    def _on_frame_grid(self, pts: Sequence[PingSample], x0: int, y0: int,
                       extent: Tuple[float, float, float]) -> Optional[Tuple[float, float]]:
        """The estimate (r, c) from the USB frame grid, or None where the grid is not seen.

        On USB every IN transfer completes at a frame boundary, so the T4s (less the host's read
        latency, alike for all) fall on one phase of the 1 ms grid; the OUT transfer carrying a
        PING goes in the first frame after T1. With the grid's phase read off the T4s, each ping
        places its PING's arrival (that frame plus the nominal serialisation) instead of only
        bounding it, and a straight line through the placements gives the rate and the offset:
        the estimate no longer waits for a ping that met its frame at the very edge. PINGs written
        within an eighth of a frame of a boundary are left out (the host's write path, or the read
        latency in the phase, could put them in the frame either side); placements that do not
        line up (a host whose timing hides the grid) give None. Only the estimate uses this, kept
        inside the region at the newest ping (`extent`: s_new, low, high); the bound is the
        region's, whatever the grid says."""
        f = self.usb_frame_ns
        if not f or len(pts) < GRID_MIN_PINGS:
            return None
        hz = self.tick_hz
        grid = _grid_phase(pts, f)
        if grid is None:
            return None   # the T4s are not frame-aligned: no grid to read
        t_ref, phase_ref, drift = grid
        # The T4s' envelope is the frame boundary plus the least read latency: the boundary is earlier.
        phase_ref -= min(max(0, self.read_latency_ns), f // 4)
        a_list: List[float] = []
        v_list: List[float] = []
        for p in pts:
            phase = round(phase_ref + drift * (p.t1_raw - t_ref) / NS_PER_S) % f
            first = phase - ((phase - p.t1_raw) // f) * f   # the first boundary at or after T1 (ints)
            if not f / 8 <= first - p.t1_raw <= f - f / 8:
                continue
            a_ticks = p.t2_ticks + 0.5 - y0
            a_list.append(a_ticks / hz)
            v_list.append(((first + self.anchor_out_ns - x0) * hz - a_ticks * NS_PER_S) / hz)
        # The rate: the median slope between placements half the list apart, which a PING a slow
        # write put in a later frame (1 ms off) or behind other bytes does not move.
        r = _median_slope(a_list, v_list) if len(a_list) >= GRID_MIN_PINGS else None
        if r is None:
            return None
        mid = statistics.median(v - r * a for a, v in zip(a_list, v_list))
        resid = sorted(v - r * a for a, v in zip(a_list, v_list) if abs(v - r * a - mid) < f / 10)
        if len(resid) < max(GRID_MIN_PINGS, 0.75 * len(a_list)):
            return None   # placements in different frames: the grid is not what it seemed
        # A PING reaches the device its latency after its frame, never before: the offset is the
        # edge of the placements (their 90th percentile, not the last: one PING put in the frame
        # before its own must not move it), as the grid's phase is the edge of the T4s.
        c = resid[min(len(resid) - 1, int(GRID_EDGE_QUANTILE * len(resid)))]
        s_new, lo, hi = extent
        at_new = min(max(c + r * s_new, lo), hi)
        return r, at_new - r * s_new

    def _s_at_raw(self, reg: _Region, raw_ns: int) -> Optional[float]:
        if abs(raw_ns - reg.x0) > _LIMIT:
            return None
        return ((raw_ns - reg.x0) - reg.c) / (NS_PER_S + reg.r)

    def _residual_ns(self, s: PingSample) -> int:
        """Host midpoint minus the estimate's raw instant at the device midpoint (0 without one)."""
        reg = self._region
        if reg is None:
            return 0
        y = (s.t2_ticks + s.t3_ticks) / 2 - reg.y0
        x = (s.t1_raw + s.t4_raw) / 2 - reg.x0
        value = x - (reg.c + (NS_PER_S + reg.r) * y / self.tick_hz)
        return round(value) if math.isfinite(value) else 0

    # -- queries -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Enough pings in the window for a result worth serving."""
        return self._region is not None and len(self._points) >= self.min_points

    @property
    def points(self) -> int:
        return len(self._points)

    def ticks_at(self, raw_ns: int) -> Optional[int]:
        """The estimate of the device's tick count at raw instant `raw_ns` (None before a fit)."""
        reg = self._region
        s = None if reg is None else self._s_at_raw(reg, raw_ns)
        if reg is None or s is None:
            return None
        return reg.y0 + round(s * self.tick_hz)

    def raw_at(self, ticks: int) -> Optional[int]:
        """The estimate of the raw ns at which the device's counter reads `ticks`."""
        reg = self._region
        if reg is None or abs(ticks - reg.y0) > _LIMIT:
            return None
        return reg.x0 + round(reg.c + (NS_PER_S + reg.r) * ((ticks - reg.y0) / self.tick_hz))

    @property
    def ticks_per_raw_ns(self) -> Optional[float]:
        reg = self._region
        return None if reg is None else self.tick_hz / (NS_PER_S + reg.r)

    @property
    def freq_ppm(self) -> Optional[float]:
        """The device oscillator's frequency error against the raw clock, in ppm."""
        reg = self._region
        return None if reg is None else (NS_PER_S / (NS_PER_S + reg.r) - 1.0) * 1e6

    @property
    def width_ns(self) -> Optional[int]:
        """The region's extent in offset at the newest ping (the bound there is about half)."""
        return None if self._region is None else math.ceil(self._region.width_ns)

    @property
    def min_delay_ns(self) -> Optional[int]:
        return min(self._delays) if self._delays else None

    def bound_ns(self, raw_ns: int) -> Optional[int]:
        """Bound on the error of the estimate at raw instant `raw_ns`, in ns (None until ready).

        Every line in the region is within the vertices' extent; add the wander since the newest
        ping and 1.5 ticks (the counter truncates, and t0 is rounded to a tick).
        """
        reg = self._region
        s = None if reg is None else self._s_at_raw(reg, raw_ns)
        if reg is None or s is None or not self.ready:
            return None
        spread = max(abs((c - reg.c) + (r - reg.r) * s) for r, c in reg.vertices)
        wander = self.wander_ppb * max(0.0, s - reg.s_new)
        return math.ceil(spread + wander + 1.5 * NS_PER_S / self.tick_hz)


def _grid_phase(pts: Sequence[PingSample], f: int) -> Optional[Tuple[int, float, float]]:
    """The frame grid the T4s sit on: (t_ref, phase at t_ref in [0, f), drift in ns per second).

    The host controller's frame clock has its own crystal, tens of ppm off the raw clock, so the
    grid's phase drifts (50 ppm: 50 µs a second). The T4s' residues modulo the frame are unwrapped,
    each against the median of the five before it (pings a second apart move it far less than half
    a frame); as a T4 comes its read latency after its frame, never before, the grid is their
    lower envelope: the drift is the
    median slope between pings half the list apart (robust to the T4s a stalled reader stamped
    late), the phase the detrended residues' 10th percentile, leaving out those a stall of over
    half a frame wrapped to look early. None when they do not lie on one drifting grid (fewer than
    3 in 4 within an eighth of a frame of their median)."""
    t_ref = pts[0].t4_raw
    ts = [(p.t4_raw - t_ref) / NS_PER_S for p in pts]
    u = [float(pts[0].t4_raw % f)]
    for p in pts[1:]:
        # Unwrapped against the median of the last few: one stalled T4 must not move the branch.
        ref = statistics.median(u[-5:])
        u.append(ref + (p.t4_raw % f - ref + f / 2) % f - f / 2)
    # A T4 read more than half a frame late (a stalled reader) wraps to look early, below the
    # envelope, where nothing can be: a first, robust drift (the median slope between pings half
    # the list apart) finds such points so that the envelope is taken without them.
    drift = _median_slope(ts, u)
    if drift is None:
        return None
    detrended = sorted(x - drift * t for x, t in zip(u, ts))
    mid = detrended[len(detrended) // 2]
    # Frame-aligned T4s lie within an eighth of a frame of their median, but for the few a stall
    # delayed (late, or by over half a frame wrapped to look early): at least 3 in 4 of them.
    if sum(abs(d - mid) <= f / 8 for d in detrended) < 0.75 * len(detrended):
        return None
    rest = [d for d in detrended if d >= mid - f / 8]
    # The envelope's edge, not its lowest point: one T4 a stall delayed by just under a whole
    # frame looks early by less than that eighth.
    edge = rest[int((1 - GRID_EDGE_QUANTILE) * len(rest))]
    return t_ref, edge % f, drift


def _median_slope(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """The median slope between points half the list apart (xs ascending): a line a minority of
    outliers does not move. None when no such pair has distinct xs."""
    half = len(xs) // 2
    slopes = sorted((ys[i + half] - ys[i]) / (xs[i + half] - xs[i])
                    for i in range(len(xs) - half) if xs[i + half] > xs[i])
    return slopes[len(slopes) // 2] if slopes else None


def _clip(poly: List[_Vertex], kr: float, kc: float, g: float) -> List[_Vertex]:
    """The convex polygon `poly` cut to kr * r + kc * c <= g (Sutherland-Hodgman, one edge)."""
    out: List[_Vertex] = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        fp = kr * p[0] + kc * p[1] - g
        fq = kr * q[0] + kc * q[1] - g
        if fp <= 0:
            out.append(p)
        if (fp <= 0) != (fq <= 0):
            t = fp / (fp - fq)
            v = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
            if not out or out[-1] != v:
                out.append(v)
    if len(out) > 1 and out[0] == out[-1]:
        out.pop()
    return out
