"""The feasible-region estimator (sans-IO), on simulated pings whose true clock relation is known."""

from __future__ import annotations

import random
from typing import Callable, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsq.bridge import feasible
from tsq.bridge.feasible import ANCHORS, FeasibleFit, PingSample, _clip

NS = 1_000_000_000
MS = 1_000_000


class Device:
    """A device whose counter is floor(tick0 + (raw - raw0) * tick_hz * (1 + ppm) / 1e9)."""

    def __init__(self, tick_hz: int, ppm_micro: int, tick0: int, raw0: int) -> None:
        self.hz, self.ppm_micro, self.tick0, self.raw0 = tick_hz, ppm_micro, tick0, raw0
        self.step_at: Optional[int] = None
        self.step_micro = 0

    def ticks(self, raw: int) -> int:
        # ppm in millionths of a ppm, exact in integers; an optional frequency step at `step_at`.
        scale = 10**12
        dt = raw - self.raw0
        t = dt * self.hz * (scale + self.ppm_micro)
        if self.step_at is not None and raw > self.step_at:
            t += (raw - self.step_at) * self.hz * self.step_micro
        return self.tick0 + t // (scale * NS)


Delay = Callable[[random.Random, int], int]


def usb_delay(quantum: int, jitter: int, clock_ppm: int = 0, phase: int = 0) -> Delay:
    """A wait for the next `quantum` boundary of a free-running clock (`clock_ppm` off raw, at
    `phase`), plus a little jitter. The host's USB frames are on the raw clock's side; an adapter's
    latency timer runs on its own crystal, so the PONG meets its flush at a phase that drifts."""
    def d(rng: random.Random, at: int) -> int:
        local = at * (1_000_000 + clock_ppm) // 1_000_000 + phase
        return quantum - local % quantum + rng.randrange(jitter + 1)
    return d


def ping(rng: random.Random, dev: Device, t1: int, min_out: int, min_back: int,
         up: Delay, down: Delay, turnaround_ns: int = 50_000) -> PingSample:
    t2_raw = t1 + min_out + up(rng, t1 + min_out)
    t3_raw = t2_raw + turnaround_ns
    t4 = t3_raw + min_back + down(rng, t3_raw + min_back)
    return PingSample(t1, dev.ticks(t2_raw), dev.ticks(t3_raw), t4)


def error_ns(fit: FeasibleFit, dev: Device, raw: int) -> float:
    got = fit.ticks_at(raw)
    assert got is not None
    return (got - dev.ticks(raw)) * NS / dev.hz


def ls_error_ns(samples: List[PingSample], dev: Device, raw: int) -> float:
    """What a plain least-squares line through the ping midpoints says at `raw` (for comparison)."""
    x0, y0 = samples[0].t1_raw, samples[0].t2_ticks
    xs = [(s.t1_raw + s.t4_raw) / 2 - x0 for s in samples]
    ys = [(s.t2_ticks + s.t3_ticks) / 2 - y0 for s in samples]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    pred = y0 + my + k * (raw - x0 - mx)
    return (pred - dev.ticks(raw)) * NS / dev.hz


# -- the property: the truth is always inside the bound ----------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    tick_hz=st.sampled_from([32_768, 1_000_000, 16_000_000, 48_000_000]),
    ppm_micro=st.integers(-500 * 10**6, 500 * 10**6),
    raw0=st.integers(0, 2**62),
    tick0=st.integers(0, 2**62),
    min_out=st.integers(0, 3 * MS),
    min_back=st.integers(0, 3 * MS),
    quantum=st.sampled_from([1, 125_000, MS, 16 * MS]),
    jitter=st.integers(0, 200_000),
    gaps=st.lists(st.integers(1_000_000, 20 * NS), min_size=1, max_size=40),
    seed=st.integers(0, 2**32),
    anchor=st.sampled_from(ANCHORS),
    grid=st.sampled_from([0, MS]),
)
def test_the_bound_always_covers_the_true_offset(
    tick_hz: int, ppm_micro: int, raw0: int, tick0: int, min_out: int, min_back: int,
    quantum: int, jitter: int, gaps: List[int], seed: int, anchor: str, grid: int,
) -> None:
    # `grid`: the estimate read off a USB frame grid (anchor "out"), whether the delays show one
    # or not: it moves the estimate, and the bound, measured from it, still covers the truth.
    rng = random.Random(seed)
    dev = Device(tick_hz, ppm_micro, tick0, raw0)
    fit = FeasibleFit(tick_hz, min_out, min_back, min_points=2, anchor=anchor, usb_frame_ns=grid)
    t1 = raw0 + rng.randrange(NS)
    d = usb_delay(quantum, jitter)
    for gap in gaps:
        t1 += gap
        s = ping(rng, dev, t1, min_out, min_back, d, d, rng.randrange(0, 3 * MS))
        fit.add(s)
        assert fit.empty_resets == 0 and fit.conflicts == 0   # the true line is always feasible
        if not fit.ready:
            continue
        for q in (s.t4_raw, s.t4_raw + rng.randrange(3 * NS), s.t1_raw - rng.randrange(gap)):
            bound = fit.bound_ns(q)
            assert bound is not None and abs(error_ns(fit, dev, q)) <= bound, (q, bound)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**100, 2**100), st.integers(-2**100, 2**100),
                          st.integers(-2**40, 2**40), st.integers(-2**40, 2**40)), max_size=30),
       st.integers(-2**300, 2**300), st.integers(1, 2**70))
def test_total_on_any_integers(rows: List[Tuple[int, int, int, int]], query: int, tick_hz: int) -> None:
    for fit in (FeasibleFit(tick_hz, min_points=1),
                FeasibleFit(tick_hz, min_points=1, anchor="out", usb_frame_ns=MS)):
        for t1, t2, turn, rtt in rows:
            r = fit.add(PingSample(t1, t2, t2 + turn, t1 + rtt))
            assert isinstance(r.residual_ns, int)
            for q in (t1, query):
                fit.ticks_at(q)
                fit.bound_ns(q)
            fit.raw_at(t2)
            fit.raw_at(query)
            _ = fit.freq_ppm, fit.width_ns, fit.ticks_per_raw_ns, fit.min_delay_ns


@pytest.mark.parametrize("kwargs", [
    {"tick_hz": 1000, "anchor": "middle"},
    {"tick_hz": 0}, {"tick_hz": -5}, {"tick_hz": 1000, "min_out_ns": -1}, {"tick_hz": 1000, "window": 1},
    {"tick_hz": 1000, "max_ppm": 0}, {"tick_hz": 1000, "wander_ppb": -1}, {"tick_hz": 1000, "horizon_ns": 0},
])
def test_nonsense_parameters_are_a_value_error(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        FeasibleFit(**kwargs)


# -- quantised delays: 1/N, where least squares averages like 1/sqrt(N) ------------------------------
def test_quantised_usb_delays_converge_much_faster_than_least_squares() -> None:
    """FTDI-like: 1 ms frames both ways (free-running, so the phase a ping meets is random), 2 µs of
    jitter, 24-byte frames at 115200 (2.08 ms serialisation each way, known to the estimator).
    Over 8 runs of 60 pings the feasible estimate's error is far below least squares', and its bound
    (which least squares cannot give: half the 4 ms minimum round trip is its only honest one) holds."""
    ser = 24 * 86_805
    feas_err, ls_err, bounds = [], [], []
    for seed in range(8):
        rng = random.Random(seed)
        dev = Device(1_000_000, 37 * 10**6, 5_000, 10**18)
        fit = FeasibleFit(1_000_000, ser, ser)
        up, down = usb_delay(MS, 2_000), usb_delay(MS, 2_000, 30 + seed, rng.randrange(MS))
        samples = []
        t1 = 10**18
        for _ in range(60):
            t1 += NS + rng.randrange(MS)
            samples.append(ping(rng, dev, t1, ser, ser, up, down))
            assert fit.add(samples[-1]).accepted
        q = samples[-1].t4_raw + NS // 2
        bound = fit.bound_ns(q)
        assert bound is not None
        e = error_ns(fit, dev, q)
        assert abs(e) <= bound
        feas_err.append(abs(e))
        ls_err.append(abs(ls_error_ns(samples, dev, q)))
        bounds.append(bound)
    assert max(bounds) < 200_000                       # vs 2 ms: the minimums are known
    assert sum(feas_err) < sum(ls_err) / 3, (feas_err, ls_err)
    assert sorted(feas_err)[4] < 25_000


def coupled_usb_ping(rng: random.Random, dev: Device, t1: int, phase: int, ser: int) -> PingSample:
    """One ping through a USB link with one IN poll a frame (the line models' CDC-ACM and
    adapters): the PING leaves in the first frame after T1 and is serialised (`ser`), the device
    answers 50-300 µs later, the PONG is serialised back and leaves in the first frame after that.
    Up to 5 µs of jitter each way."""
    def next_frame(t: int) -> int:
        return t + MS - (t - phase) % MS
    t2_raw = next_frame(t1) + ser + rng.randrange(5_000)
    t3_raw = t2_raw + rng.randrange(50_000, 300_000)
    t4 = next_frame(t3_raw + ser) + rng.randrange(5_000)
    return PingSample(t1, dev.ticks(t2_raw), dev.ticks(t3_raw), t4)


def run_coupled_usb(fit: FeasibleFit, seed: int, ser: int, pings: int, t4_late_ns: int = 0) -> float:
    """`pings` coupled USB pings (dithered over the frame, each T4 `t4_late_ns` late) into `fit`,
    asserting its bound at a random instant after each; its error half a second after the last."""
    rng = random.Random(seed)
    dev = Device(1_000_000, -23 * 10**6, 9_000, 10**18)
    phase, t1 = rng.randrange(MS), 10**18
    for _ in range(pings):
        t1 += NS + rng.randrange(MS)              # the bridge's dither
        s = coupled_usb_ping(rng, dev, t1, phase, ser)
        s = PingSample(s.t1_raw, s.t2_ticks, s.t3_ticks, s.t4_raw + t4_late_ns)
        assert fit.add(s).accepted
        q = s.t4_raw + rng.randrange(NS)
        bound = fit.bound_ns(q)
        assert bound is None or abs(error_ns(fit, dev, q)) <= bound
    return error_ns(fit, dev, s.t4_raw + NS // 2)


@pytest.mark.parametrize("ser", [0, 24 * 86_805])        # CDC-ACM; an adapter at 115200
def test_on_coupled_usb_frames_the_out_anchor_removes_the_centre_bias(ser: int) -> None:
    """The PONG's wait is the frame less the turnaround, never near its minimum: the region's back
    side stays ~0.7 ms loose and its centre ~0.35 ms off. Anchored to the PING leg, with pings
    dithered over the frame, the error is tens of µs after a minute; both bounds hold."""
    errors: dict[str, List[float]] = {a: [] for a in ANCHORS}
    for seed in range(6):
        for anchor in ANCHORS:
            errors[anchor].append(abs(run_coupled_usb(FeasibleFit(1_000_000, ser, ser, anchor=anchor),
                                                      seed, ser, 60)))
    assert min(errors["centre"]) > 150_000, errors
    assert max(errors["out"]) < 100_000 and sorted(errors["out"])[3] < 30_000, errors
    assert sum(errors["out"]) < sum(errors["centre"]) / 5, errors


def test_region_shrinks_with_more_pings() -> None:
    ser = 24 * 86_805
    rng = random.Random(11)
    dev = Device(16_000_000, -12 * 10**6, 0, 0)
    fit = FeasibleFit(16_000_000, ser, ser, window=1024, max_age_ns=3600 * NS)
    up, down = usb_delay(MS, 1_000), usb_delay(MS, 1_000, 41, 123_456)
    widths = {}
    t1 = 0
    for i in range(1, 321):
        t1 += NS + rng.randrange(MS)
        fit.add(ping(rng, dev, t1, ser, ser, up, down))
        if i in (20, 320):
            widths[i] = fit.width_ns
    assert widths[320] is not None and widths[20] is not None
    assert widths[320] * 4 < widths[20]


# -- empty regions, windows, bad pings ---------------------------------------------------------------
def _run(fit: FeasibleFit, dev: Device, n: int, start: int, rng: random.Random,
         ser: int = 0) -> Tuple[int, PingSample]:
    up, down = usb_delay(MS, 1_000), usb_delay(MS, 1_000, 41, 123_456)
    t1 = start
    s = None
    for _ in range(n):
        t1 += NS + rng.randrange(MS)
        s = ping(rng, dev, t1, ser, ser, up, down)
        fit.add(s)
    assert s is not None
    return t1, s


def test_a_frequency_step_empties_the_region_and_the_oldest_pings_go() -> None:
    rng = random.Random(3)
    dev = Device(1_000_000, 20 * 10**6, 0, 0)
    fit = FeasibleFit(1_000_000)
    t1, _ = _run(fit, dev, 100, 0, rng)
    assert fit.empty_resets == 0 and fit.points == 100
    dev.step_at, dev.step_micro = t1, 5 * 10**6          # +5 ppm: 5 µs/s, far beyond the wander
    t1, s = _run(fit, dev, 150, t1, rng)
    assert fit.empty_resets >= 1 and fit.points < 150     # only pings from after the step
    assert fit.freq_ppm is not None and abs(fit.freq_ppm - 25.0) < 1.0
    q = s.t4_raw + NS // 2
    bound = fit.bound_ns(q)
    assert bound is not None and abs(error_ns(fit, dev, q)) <= bound


def test_one_bad_stamp_is_held_back_not_a_restart() -> None:
    rng = random.Random(4)
    dev = Device(1_000_000, 20 * 10**6, 0, 0)
    fit = FeasibleFit(1_000_000)
    t1, _ = _run(fit, dev, 50, 0, rng)
    width = fit.width_ns
    # A T2 stamped 3 ms early (before the PING could have arrived): conflicts with the window.
    t1 += NS
    bad = PingSample(t1, dev.ticks(t1) - 3_000, dev.ticks(t1) - 2_950, t1 + 600_000)
    r = fit.add(bad)
    assert not r.accepted and r.reason == "conflicts with the window"
    assert fit.conflicts == 1 and fit.empty_resets == 0 and fit.points == 50
    _run(fit, dev, 5, t1, rng)
    assert fit.empty_resets == 0 and fit.points == 55
    assert fit.width_ns is not None and width is not None and fit.width_ns <= width + 1_000


def test_window_by_count_and_by_age() -> None:
    rng = random.Random(5)
    dev = Device(1_000_000, 0, 0, 0)
    fit = FeasibleFit(1_000_000, window=16)
    _run(fit, dev, 40, 0, rng)
    assert fit.points == 16
    fit = FeasibleFit(1_000_000, max_age_ns=10 * NS)
    _run(fit, dev, 40, 0, rng)
    assert fit.points <= 11
    # A long silence: everything before it ages out at once.
    _run(fit, dev, 1, 1000 * NS, rng)
    assert fit.points == 1


def test_no_result_before_min_points_and_rejections() -> None:
    fit = FeasibleFit(1_000_000, min_out_ns=1_000_000, min_back_ns=1_000_000, min_points=3)
    assert fit.ticks_at(0) is None and fit.bound_ns(0) is None and fit.freq_ppm is None
    r = fit.add(PingSample(1000, 50, 40, 2000))
    assert not r.accepted and r.reason == "inconsistent stamps"
    # A round trip of 1.5 ms through a link whose minimums add up to 2 ms: impossible.
    r = fit.add(PingSample(0, 100, 110, 1_500_000))
    assert not r.accepted and r.reason == "faster than the link allows"
    assert fit.add(PingSample(0, 1_000, 1_010, 3_000_000)).accepted
    assert fit.ticks_at(0) is not None and fit.bound_ns(0) is None   # an estimate, no bound yet
    r = fit.add(PingSample(0, 2_000, 2_010, 3_000_000))
    assert not r.accepted and r.reason == "time went backwards"
    assert fit.add(PingSample(NS, 1_001_000, 1_001_010, NS + 3_000_000)).accepted
    assert fit.add(PingSample(2 * NS, 2_001_000, 2_001_010, 2 * NS + 3_000_000)).accepted
    assert fit.ready and fit.bound_ns(2 * NS) is not None
    assert fit.rejected == 3 and fit.accepted == 3
    fit.reset()
    assert not fit.ready and fit.points == 0


def test_a_calibrated_one_sided_receive_delay_is_no_bias() -> None:
    """A UART whose receive timeout holds every PONG 277 µs (32 bit times at 115200) before the host
    sees it: four timestamps cannot tell it from asymmetry, so without it in `min_back_ns` the
    centre is ~139 µs off (and the bound says so); with it, the error is the jitter's."""
    ser, timeout = 24 * 86_805, 32 * 8_680
    results = {}
    for calibrated in (False, True):
        rng = random.Random(9)
        dev = Device(1_000_000, -15 * 10**6, 0, 10**17)
        fit = FeasibleFit(1_000_000, ser, ser + (timeout if calibrated else 0))

        def jitter(rng: random.Random, at: int) -> int:
            return rng.randrange(30_000)

        def held(rng: random.Random, at: int) -> int:
            return timeout + rng.randrange(30_000)

        t1 = 10**17
        for _ in range(120):
            t1 += NS + rng.randrange(MS)
            s = ping(rng, dev, t1, ser, ser, jitter, held)
            fit.add(s)
        q = s.t4_raw + NS // 2
        bound = fit.bound_ns(q)
        assert bound is not None
        results[calibrated] = (abs(error_ns(fit, dev, q)), bound)
    (err_raw, bound_raw), (err_cal, bound_cal) = results[False], results[True]
    assert err_raw <= bound_raw and err_cal <= bound_cal
    assert err_raw > 100_000 and err_cal < 10_000 and bound_cal < bound_raw / 4


# -- the region's corner cases, each with what it must do -----------------------------------------------
def _tight(t_ns: int, offset_ns: int) -> PingSample:
    """A 1 MHz device whose counter reads t/1 µs at raw t + offset, pinged with a 2 µs round trip."""
    tick = t_ns // 1000
    raw = tick * 1000 + offset_ns
    return PingSample(raw - 1000, tick, tick, raw + 1000)


def test_a_ping_off_the_line_between_two_others_empties_the_region() -> None:
    """0, -100 µs, 0 at 1 s intervals: each pair is feasible (and the offsets' box allows all three),
    but no straight line passes all three within 1 µs — the third is held back, not believed."""
    fit = FeasibleFit(1_000_000, min_points=1, conflicts_to_restart=3)
    assert fit.add(_tight(NS, 0)).accepted and fit.add(_tight(2 * NS, -100_000)).accepted
    r = fit.add(_tight(3 * NS, 0))
    assert not r.accepted and r.reason == "conflicts with the window" and fit.points == 2
    # Queries beyond any real stamp (2**256 ns from the window) have no answer, and raise nothing.
    assert fit.ticks_at(2**300) is None and fit.bound_ns(-(2**300)) is None and fit.raw_at(2**300) is None


def test_a_restart_keeps_the_longest_feasible_tail_of_the_held_pings() -> None:
    # Found by a search over small random windows: the restart has to cut past the middle.
    fit = FeasibleFit(1_000_000, min_points=1, conflicts_to_restart=2)
    rows = [(2000000000, 4000000000, 4000000029, 2008881152),
            (2000004000, 7000000000, 7000000238, 2006041890),
            (2000006000, 8000000000, 8000000948, 2001314537)]
    results = [fit.add(PingSample(*r)) for r in rows]
    assert [r.accepted for r in results] == [True, False, True]
    assert fit.empty_resets == 1 and fit.points == 1


def test_a_restart_drops_held_pings_whose_ticks_are_past_the_new_ping() -> None:
    # Found by a search over small random windows (max_ppm 100): a held ping's counter is ahead of
    # the ping that restarts the window, so it cannot precede it and is dropped from the new one.
    fit = FeasibleFit(1_000_000, min_points=1, conflicts_to_restart=2, max_ppm=100)
    rows = [(2, -1000000, -999240, 6341700), (2000000002, 0, 601, 2008978907),
            (3000000002, 0, 761, 3007543830),
            (5000000002, 3000000, 3000903, 5007189475), (5000000006, 3000000, 3000533, 5007130731),
            (5004000006, 3000002, 3000046, 5009220270), (7004000006, 3003002, 3003234, 7004438392),
            (7004002006, 3003003002, 3003003354, 7014047794)]
    for r in rows:
        fit.add(PingSample(*r))
    assert fit.empty_resets >= 1 and fit.ready
    newest = PingSample(*rows[-1])
    bound = fit.bound_ns(newest.t4_raw)
    assert bound is not None and fit.ticks_at(newest.t4_raw) is not None


def test_held_pings_out_of_order_among_themselves_are_left_out_of_a_restart() -> None:
    """Window 0, -100 µs; then three conflicting pings, the second with a counter behind the first's
    (a glitch): the restart keeps the first and the newest, not the glitch."""
    fit = FeasibleFit(1_000_000, min_points=1, conflicts_to_restart=3)
    assert fit.add(_tight(NS, 0)).accepted and fit.add(_tight(2 * NS, -100_000)).accepted
    first, glitch, newest = _tight(3 * NS, 0), _tight(2_500_000_000, 600_000_000), _tight(4 * NS, 0)
    assert glitch.t1_raw > first.t1_raw and glitch.t2_ticks < first.t2_ticks
    assert [fit.add(p).accepted for p in (first, glitch, newest)] == [False, False, True]
    assert fit.empty_resets == 1 and fit.points == 2
    got = fit.raw_at(first.t2_ticks)   # the line through first and newest, within the 2 µs round trip
    assert got is not None and abs(got - (first.t1_raw + 1000)) <= 1000


def test_clip_keeps_a_vertex_on_the_cut_once() -> None:
    # The cut c <= 0 passes through (0, 0) and (1, 0); (1, 1) and (0, 1) are outside.
    assert _clip([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)], 0.0, 1.0, 0.0) == [(0.0, 0.0), (1.0, 0.0)]


def test_the_frame_grid_is_not_read_where_it_is_not_there() -> None:
    f = MS
    # T4s all at one instant: no time between them, no drift to read.
    same = [PingSample(i * NS, i * 1000, i * 1000 + 10, 5 * NS) for i in range(feasible.GRID_MIN_PINGS)]
    assert feasible._grid_phase(same, f) is None
    # T4s spread over the frame (a host controller that does not complete on frame boundaries).
    rng = random.Random(4)
    spread = [PingSample(i * NS, i * 1000, i * 1000 + 10, i * NS + 5 * MS + rng.randrange(f))
              for i in range(1, 40)]
    assert feasible._grid_phase(spread, f) is None
    # T4s on the grid, but the PINGs' arrivals (T2) scattered over a frame: the placements do not
    # line up, so the grid is not what it seemed.
    fit = FeasibleFit(1_000_000, anchor="out", usb_frame_ns=f)
    scattered = [PingSample(i * NS + 300_000, i * 1_000_000 + rng.randrange(f // 1000),
                            i * 1_000_000 + 2_000, i * NS + 6 * f) for i in range(1, 40)]
    assert fit._on_frame_grid(scattered, scattered[0].t1_raw, scattered[0].t2_ticks, (0.0, -1e9, 1e9)) is None
    # The same pings with T2 one frame after each PING's frame: read off the grid.
    lined = [PingSample(p.t1_raw, (p.t1_raw + 700_000) // 1000, (p.t1_raw + 700_000) // 1000 + 2_000,
                        p.t4_raw) for p in scattered]
    assert fit._on_frame_grid(lined, lined[0].t1_raw, lined[0].t2_ticks, (0.0, -1e9, 1e9)) is not None


def test_the_hosts_read_latency_is_taken_off_the_frame_grid() -> None:
    """Every T4 carries the host's read latency after its frame (here 20 µs, plus up to 5 µs): the
    grid read off the T4s is that much late, and so is every PING placed on it. Told the latency
    (`read_latency_ns`, what tsq.bridge.readprobe measures), the fit takes it off the grid's phase:
    the estimate's bias goes; the bound holds either way."""
    read_ns = 20_000
    ser = 24 * 86_805
    errors: dict[int, List[float]] = {0: [], read_ns: []}
    for seed in range(6):
        for told in errors:
            fit = FeasibleFit(1_000_000, ser, ser, anchor="out", usb_frame_ns=MS)
            fit.read_latency_ns = told
            errors[told].append(run_coupled_usb(fit, seed, ser, 90, t4_late_ns=read_ns))
    bias = {told: sum(e) / len(e) for told, e in errors.items()}
    assert abs(bias[0]) > 12_000, bias               # the whole latency, less the jitter's share
    assert abs(bias[read_ns]) < abs(bias[0]) / 3, bias
