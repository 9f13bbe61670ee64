"""`tsq report`'s figures: per gateway (host id), its sources, its model and its devices.

What is known is kept apart from what is noise (docs/report.md):
- a device's provable figure is the error bound it was given; its ping residuals are line noise
  (how well the line fit follows the pings), not its error; its true error exists only where a
  truth log does (the simulators');
- the gateway model's provable figure is its error bound; 'system clock - model' is a comparison;
- a source's offsets are inputs (a falseticker is supposed to be off).
Gaps are measured against the poll interval the producer logged with each row (`poll_s`).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import gc
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import numpy.typing as npt

from tsq.fieldlog_files import TRUTH_SERVING, TRUTH_STATES, ReadStats
from tsq.report_read import (
    FloatArray,
    HostLogs,
    IntArray,
    Truth,
    Vocabulary,
    normalise_device,
    read_stream,
    read_truth,
    truth_paths,
)

SERVING = ("synchronised", "holdover")        # states in which a clock serves time (and a bound)
FIT_NOT_READY = ("handshake", "tracking")     # device states whose residuals are not line noise yet
GAP_FACTOR = 1.5                              # a gap: no row for longer than 1.5 x poll_s + 1 s
GAP_SLACK_S = 1.0
V1_GAP_FACTOR, V1_GAP_MIN_S = 10.0, 60.0      # v1 logs have no poll_s: 10 x median spacing, >= 60 s
MIN_DRIFT_SPAN_S = 86_400.0                   # drift only over a day or more (see docs/report.md)
DRIFT_BIN_S = 3_600.0
PLOT_POINTS = 20_000                          # per trace; more would not show on a figure
STABILITY_POINTS = 200_000                    # per series, evenly decimated beyond (MTIE's cost)
MAX_LISTED = 20                               # gaps and transitions listed per series


@dataclass
class Trace:
    label: str
    t_ns: IntArray
    y_ns: FloatArray
    style: str  # "points" (what the series is about), "bound" (drawn as ±), "noise" (grey points)


@dataclass
class Plot:
    title: str
    order: int  # in the figure: sources (0), the model (1), devices (2)
    traces: List[Trace] = field(default_factory=list)


def iso(ns: float) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- building blocks -----------------------------------------------------------------------------
def in_order(cols: Dict[str, Any], since: Optional[int], until: Optional[int]) -> Dict[str, Any]:
    """The columns sorted by time (logs are in order; sorted only if not) and cut to [since, until]."""
    t = cols["time_utc"]
    if len(t) > 1 and bool((np.diff(t) < 0).any()):
        order = np.argsort(t, kind="stable")
        cols = {c: v[order] for c, v in cols.items()}
        t = cols["time_utc"]
    if since is None and until is None:
        return cols
    keep = np.ones(len(t), dtype=bool)
    if since is not None:
        keep &= t >= since
    if until is not None:
        keep &= t <= until
    return {c: v[keep] for c, v in cols.items()}


@dataclass
class Intervals:
    """Between consecutive rows: the time (s), the time expected (the poll interval in force), and
    whether it was a gap. float32: seconds between rows need no more, and a month is millions."""

    dt_s: Any
    expected_s: Any
    gap: npt.NDArray[np.bool_]


def timing(t: IntArray, poll_s: Any) -> Tuple[Dict[str, Any], Intervals]:
    """Span, coverage and gaps of one series against the poll interval in force.

    Each row's `poll_s` says when the next row is due. A gap is a silence longer than
    GAP_FACTOR x poll_s + GAP_SLACK_S; coverage is the span less the time past due in gaps."""
    dt = np.diff(t).astype(np.float32)
    dt *= np.float32(1e-9)
    span = float(t[-1] - t[0]) / 1e9 if len(t) else 0.0
    poll = np.asarray(poll_s, dtype=np.float32)[:-1] if len(t) else np.zeros(0, dtype=np.float32)
    logged = np.isfinite(poll) & (poll > 0)
    spacing = float(np.median(dt)) if len(dt) else 0.0
    if len(dt) and logged.all():
        expected = poll
        gap = dt > GAP_FACTOR * poll + GAP_SLACK_S
        rule = f"> {GAP_FACTOR:g} x the logged poll interval + {GAP_SLACK_S:g} s"
    else:  # v1 logs (or rows without poll_s): the old rule
        expected = np.where(logged, poll, np.float32(spacing))
        threshold = np.where(logged, GAP_FACTOR * poll + GAP_SLACK_S,
                             max(V1_GAP_FACTOR * spacing, V1_GAP_MIN_S))
        gap = dt > threshold
        rule = (f"poll interval not logged (v1): > {V1_GAP_FACTOR:g} x the median spacing, "
                f"at least {V1_GAP_MIN_S:g} s")
    gi = np.nonzero(gap)[0]
    past_due = float((dt[gi] - expected[gi]).sum(dtype=np.float64))
    out = {
        "rows": len(t),
        "first": iso(float(t[0])) if len(t) else None, "last": iso(float(t[-1])) if len(t) else None,
        "span_s": span, "median_spacing_s": spacing,
        "poll_s": float(np.median(poll[logged])) if logged.any() else None,
        "poll_min_s": float(poll[logged].min()) if logged.any() else None,
        "poll_max_s": float(poll[logged].max()) if logged.any() else None,
        "gap_rule": rule,
        "coverage": 1.0 - (past_due / span if span > 0 else 0.0),
        "gap_count": len(gi),
        "longest_gap_s": float(dt[gi].max()) if len(gi) else 0.0,
        "gaps": [{"start": iso(float(t[i])), "end": iso(float(t[i + 1])), "seconds": float(dt[i]),
                  "poll_s": float(expected[i])} for i in gi[:MAX_LISTED]],
    }
    return out, Intervals(dt, expected, gap)


def magnitude(x: Any) -> Optional[Dict[str, float]]:
    """Signed mean and RMS, |x| percentiles and max (ns); None if no finite value."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    a = np.abs(v)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": len(v), "mean_ns": float(v.mean()), "rms_ns": float(np.sqrt(np.square(v).mean())),
            "abs_p50_ns": float(p50), "abs_p95_ns": float(p95), "abs_p99_ns": float(p99),
            "abs_max_ns": float(a.max())}


def spread(x: Any) -> Optional[Dict[str, float]]:
    """p50 / p99 / max of a non-negative figure (bounds, delays)."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    p50, p99 = np.percentile(v, [50, 99])
    return {"n": len(v), "p50_ns": float(p50), "p99_ns": float(p99), "max_ns": float(v.max())}


def states_over_time(t: IntArray, codes: Any, vocab: Vocabulary, iv: Intervals) -> Dict[str, Any]:
    """Time in each state (a row's state holds until the next row, or for its poll interval across
    a gap; the rest of a gap is 'no rows') and the transitions."""
    dt = iv.dt_s
    held = np.where(iv.gap, np.minimum(dt, iv.expected_s), dt)
    def name(c: Any) -> str:
        return vocab.names[int(c)] if c >= 0 else "(none)"

    seconds = {name(c): float(held[codes[:-1] == c].sum(dtype=np.float64)) for c in np.unique(codes[:-1])}
    change = np.nonzero(codes[1:] != codes[:-1])[0] + 1
    return {"seconds": seconds, "no_rows_s": float((dt - held).sum(dtype=np.float64)),
            "first_state": name(codes[0]) if len(codes) else None,
            "transition_count": len(change),
            "transitions": [{"time": iso(float(t[i])), "from": name(codes[i - 1]), "to": name(codes[i])}
                            for i in change[:MAX_LISTED]]}


def drift(t: IntArray, freq_ppm: Any) -> Dict[str, Any]:
    """Mean frequency and its drift (ppm/day) with a standard error, the latter only over at least
    MIN_DRIFT_SPAN_S. Hourly means are fitted by least squares; the slope's standard error is
    widened for the residuals' lag-1 autocorrelation ρ by sqrt((1+ρ)/(1-ρ)) (successive model
    frequencies share most of their data, so they are not independent)."""
    f = np.asarray(freq_ppm, dtype=np.float64)
    ok = np.isfinite(f)
    out: Dict[str, Any] = {"min_span_s": MIN_DRIFT_SPAN_S}
    if not ok.any():
        return out
    t, f = t[ok], f[ok]
    span = float(t[-1] - t[0]) / 1e9
    out.update({"mean_ppm": float(f.mean()), "span_s": span})
    if span < MIN_DRIFT_SPAN_S:
        out["note"] = (f"drift needs at least {MIN_DRIFT_SPAN_S / 3600:g} h of model rows "
                       f"(have {span / 3600:.2f} h)")
        return out
    hours = ((t - t[0]) / 1e9 // DRIFT_BIN_S).astype(np.int64)
    bins = np.unique(hours)
    x = np.array([((t[hours == b] - t[0]) / 1e9).mean() for b in bins]) / 86_400.0  # days
    y = np.array([f[hours == b].mean() for b in bins])
    n = len(x)
    if n < 4:
        out["note"] = "too few hourly means for a drift"
        return out
    xm = x - x.mean()
    slope = float((xm * (y - y.mean())).sum() / (xm * xm).sum())
    resid = y - y.mean() - slope * xm
    se = float(np.sqrt((resid * resid).sum() / (n - 2) / (xm * xm).sum()))
    denom = float((resid * resid).sum())
    rho = float((resid[1:] * resid[:-1]).sum() / denom) if denom > 0 else 0.0
    rho = min(max(rho, 0.0), 0.95)
    out.update({"drift_ppm_per_day": slope,
                "drift_se_ppm_per_day": se * float(np.sqrt((1 + rho) / (1 - rho))),
                "hourly_means": n, "residual_lag1_autocorrelation": rho})
    return out


def stability_of(t: IntArray, x_ns: Any) -> Optional[Dict[str, Any]]:
    """ADEV/TDEV/MTIE of a time-error series (tsq.stability), or None without allantools."""
    try:
        import allantools  # noqa: F401
    except ImportError:
        return None
    from tsq.stability import stability

    x = np.asarray(x_ns, dtype=np.float64)
    ok = np.isfinite(x)
    t, x = t[ok], x[ok]
    if len(t) < 4:
        return None
    step = max(1, -(-len(t) // STABILITY_POINTS))
    ts = (t[::step] - t[0]).astype(np.float64) / 1e9
    st = stability(ts, x[::step] / 1e9, max_points=STABILITY_POINTS)
    return {"tau0_s": st.tau0_s, "segments": st.segments, "tau_s": st.taus_s, "adev": st.adev,
            "tdev_s": st.tdev_s, "mtie_s": st.mtie_s}


def _decimate(t: Any, y: Any) -> Tuple[IntArray, FloatArray]:
    step = max(1, len(t) // PLOT_POINTS)
    return np.asarray(t[::step]).copy(), np.asarray(y[::step], dtype=np.float64)


def _known(truth: Optional[Dict[str, Any]], bound: Optional[Dict[str, float]]) -> Optional[Dict[str, Any]]:
    """What --max-offset checks: the true error where a truth log has serving rows, else the bound."""
    if truth is not None and truth.get("error") is not None:
        return {"what": "true error", "max_ns": truth["error"]["abs_max_ns"], "source": truth["file"]}
    if bound is not None:
        return {"what": "error bound", "max_ns": bound["max_ns"], "source": "log"}
    return None


def truth_section(tr: Truth, since: Optional[int], until: Optional[int],
                  plot: Optional[Plot]) -> Dict[str, Any]:
    """True error of one clock from its truth log: over lines where it served time (synchronised or
    holdover), and how often it was outside its own bound (which must never happen)."""
    t, err, bound, state = tr.t_ns, tr.error_ns, tr.bound_ns, tr.state
    keep = np.ones(len(t), dtype=bool)
    if since is not None:
        keep &= t >= since
    if until is not None:
        keep &= t <= until
    t, err, bound, state = t[keep], err[keep], bound[keep], state[keep]
    serving = np.isin(state, TRUTH_SERVING) & np.isfinite(err)
    beyond = serving & np.isfinite(bound) & (np.abs(err) > bound)
    counts = {TRUTH_STATES.get(int(s), str(int(s))): int((state == s).sum()) for s in np.unique(state)}
    if plot is not None and serving.any():
        plot.traces.append(Trace("true error (truth log)", *_decimate(t[serving], err[serving]), "points"))
    return {"file": str(tr.path), "lines": len(t), "states": counts,
            "serving_lines": int(serving.sum()),
            "error": magnitude(err[serving]), "bound": spread(bound[serving]),
            "beyond_bound": int(beyond.sum()),
            "stability": stability_of(t[serving], err[serving]) if serving.sum() >= 4 else None}


# -- sections ----------------------------------------------------------------------------------
def source_section(name: str, c: Dict[str, Any], plots: List[Plot]) -> Dict[str, Any]:
    t = c["time_utc"]
    out: Dict[str, Any] = {"kind": "source", "name": name}
    tim, _ = timing(t, c["poll_s"])
    out.update(tim)
    out["offset"] = magnitude(c["offset_ns"])
    out["model_bound"] = spread(c["error_bound_ns"])
    out["stability"] = stability_of(t, c["offset_ns"])
    p = Plot(f"source {name}: offset (server − model) and the model's ± bound", 0)
    p.traces.append(Trace("offset", *_decimate(t, c["offset_ns"]), "points"))
    p.traces.append(Trace("model bound", *_decimate(t, c["error_bound_ns"]), "bound"))
    plots.append(p)
    return out


def model_section(c: Dict[str, Any], vocab: Vocabulary, plots: List[Plot]) -> Dict[str, Any]:
    """The model's figures; its truth (truth-gateway.log) is added once the truth logs are read."""
    t = c["time_utc"]
    out: Dict[str, Any] = {"kind": "model", "name": "gateway model"}
    tim, iv = timing(t, c["poll_s"])
    out.update(tim)
    out["states"] = states_over_time(t, c["state"], vocab, iv)
    serving = np.isin(c["state"], list(vocab.codes_of(SERVING)))
    out["bound"] = spread(c["error_bound_ns"][serving])
    out["system_offset"] = magnitude(c["offset_ns"])
    out["frequency"] = drift(t[serving], c["freq_ppm"][serving])
    out["stability"] = stability_of(t, c["offset_ns"])
    p = Plot("gateway model: ± error bound; system clock − model UTC", 1)
    p.traces.append(Trace("system clock − model", *_decimate(t, c["offset_ns"]), "noise"))
    p.traces.append(Trace("error bound (synchronised/holdover)",
                          *_decimate(t[serving], c["error_bound_ns"][serving]), "bound"))
    out["truth"] = None
    out["known"] = _known(None, out["bound"])
    plots.append(p)
    return out


def device_section(name: str, c: Optional[Dict[str, Any]], vocab: Vocabulary,
                   plots: List[Plot]) -> Dict[str, Any]:
    """A device's figures from its rows (None: only a truth log names it); its truth is added once
    the truth logs are read."""
    out: Dict[str, Any] = {"kind": "device", "name": name}
    p = Plot(f"device {name}: ± bound given; true error; line noise", 2)
    if c is not None and len(c["time_utc"]):
        t = c["time_utc"]
        tim, iv = timing(t, c["poll_s"])
        out.update(tim)
        out["states"] = states_over_time(t, c["state"], vocab, iv)
        del iv
        serving = np.isin(c["state"], list(vocab.codes_of(SERVING)))
        fit_ready = ~np.isin(c["state"], list(vocab.codes_of(FIT_NOT_READY)))
        out["tracking_rows"] = int((c["state"] == vocab.codes.get("tracking", -2)).sum())
        out["serving_rows"] = int(serving.sum())
        out["bound_given"] = spread(c["bound_ns"][serving])
        out["line_noise"] = magnitude(c["residual_ns"][fit_ready])
        src = c["utc_source"]
        out["timescale"] = "model UTC" if (src == vocab.codes.get("model", -2)).any() else \
            "system clock (v1 rows)" if (src < 0).all() else "system clock"
        p.traces.append(Trace("bound given", *_decimate(t[serving], c["bound_ns"][serving]), "bound"))
        p.traces.append(Trace("line noise (ping residuals)",
                              *_decimate(t[fit_ready], c["residual_ns"][fit_ready]), "noise"))
    else:
        out.update({"rows": 0, "bound_given": None, "line_noise": None, "states": None})
    out["truth"] = None
    out["known"] = _known(None, out.get("bound_given"))
    plots.append(p)
    return out


# -- the whole report -------------------------------------------------------------------------
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _keep_big_arrays_in_mmap() -> None:
    """A fixed mmap threshold (glibc): arrays over 128 KiB always come from mmap and go back to the
    OS when freed. glibc otherwise raises the threshold after the first big free, later columns
    grow on the heap, and a month's report holds ~120 MB more at its peak (measured)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 128 << 10)


def _release_memory() -> None:
    """Give freed heap back to the OS between streams (parser and allantools temporaries)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _gateway(host: str) -> Dict[str, Any]:
    return {"host": host[4:] if host.startswith("dir:") else host,
            "host_id_logged": not host.startswith("dir:"), "hostname": "", "dirs": set(),
            "format_versions": set(), "sources": [], "model": None, "devices": []}


def analyse(paths: Sequence[str], since: Optional[int] = None, until: Optional[int] = None,
            devices: Optional[Sequence[str]] = None,
            truth: Sequence[str] = ()) -> Tuple[Dict[str, Any], List[Plot]]:
    """Everything the report shows, as one JSON-able dict, and the figures' data. One stream is read
    and analysed at a time, the biggest (devices) first, and each series' columns are dropped once
    its figures are done, so the peak memory is that of the biggest stream, not of all of them.
    Truth logs are read last and attached to their clocks' sections."""
    _keep_big_arrays_in_mmap()
    stats = ReadStats()
    vocab = Vocabulary()
    wanted: Optional[Set[str]] = {normalise_device(d) for d in devices} if devices else None
    gateways: Dict[str, Dict[str, Any]] = {}
    plots: List[Plot] = []
    plot_of: Dict[Tuple[str, str], Plot] = {}   # (host, device id or "gateway") -> its figure
    device_names: Dict[str, Set[str]] = {}

    def take(part: Dict[str, HostLogs]) -> None:
        for host, h in part.items():
            g = gateways.setdefault(host, _gateway(host))
            g["hostname"] = g["hostname"] or h.hostname
            g["dirs"] |= h.dirs
            g["format_versions"] |= h.versions

    devs = read_stream(paths, "devices", "device", ("time_utc",),
                       ("state", "residual_ns", "bound_ns", "poll_s", "utc_source"), stats, vocab)
    take(devs)
    for host, h in devs.items():
        device_names[host] = set(h.groups)
        for name in sorted(h.groups):
            c = h.groups.pop(name)
            if wanted is None or name in wanted:
                gateways[host]["devices"].append(device_section(name, in_order(c, since, until), vocab,
                                                                plots))
                plot_of[(host, name)] = plots[-1]
            del c
    del devs
    _release_memory()
    if wanted is None:
        samples = read_stream(paths, "gateway-samples", "server", ("time_utc", "offset_ns"),
                              ("error_bound_ns", "poll_s"), stats, vocab)
        take(samples)
        for host, h in samples.items():
            for name in sorted(h.groups):
                c = in_order(h.groups.pop(name), since, until)
                if len(c["time_utc"]):
                    gateways[host]["sources"].append(source_section(name, c, plots))
                del c
        del samples
        _release_memory()
        model = read_stream(paths, "gateway-model", None, ("time_utc", "state"),
                            ("offset_ns", "freq_ppm", "error_bound_ns", "poll_s"), stats, vocab)
        take(model)
        for host, h in model.items():
            c = in_order(h.groups.pop(""), since, until)
            if len(c["time_utc"]):
                gateways[host]["model"] = model_section(c, vocab, plots)
                plot_of[(host, "gateway")] = plots[-1]
            del c
        del model
        _release_memory()
    truths = [tr for p, explicit in truth_paths(paths, truth, stats)
              if (tr := read_truth(p, explicit, stats)) is not None]
    for (host, clock), tr in _assign_truths(truths, gateways, device_names, stats).items():
        section: Optional[Dict[str, Any]]
        if clock == "gateway":
            section = gateways[host]["model"]
        else:
            if wanted is not None and clock not in wanted:
                continue
            section = next((d for d in gateways[host]["devices"] if d["name"] == clock), None)
            if section is None:  # a truth log of a device no log row names
                section = device_section(clock, None, vocab, plots)
                plot_of[(host, clock)] = plots[-1]
                gateways[host]["devices"].append(section)
        if section is not None:
            section["truth"] = truth_section(tr, since, until, plot_of[(host, clock)])
            section["known"] = _known(section["truth"], section.get("bound") or section.get("bound_given"))
    seen_devices = {d["name"] for g in gateways.values() for d in g["devices"]}
    seen_devices |= {name for names in device_names.values() for name in names}
    out = []
    for host in sorted(gateways):
        g = gateways[host]
        g["dirs"], g["format_versions"] = sorted(g["dirs"]), sorted(g["format_versions"])
        g["devices"].sort(key=lambda d: d["name"])
        out.append(g)
    report: Dict[str, Any] = {
        "format": 2, "gateways": out, "errors": stats.errors, "problems": stats.problems,
        "torn_lines": stats.torn_lines, "bad_lines": stats.bad_lines, "files": stats.files,
        "truth_files": [str(tr.path) for tr in truths], "min_drift_span_s": MIN_DRIFT_SPAN_S,
        "devices_seen": sorted(seen_devices),
        "unmatched_devices": sorted(d for d in (devices or []) if normalise_device(d) not in seen_devices),
    }
    plots.sort(key=lambda p: p.order)
    return report, plots


def _assign_truths(truths: List[Truth], gateways: Dict[str, Dict[str, Any]],
                   devices: Dict[str, Set[str]], stats: ReadStats) -> Dict[Tuple[str, str], Truth]:
    """Which gateway each truth log belongs to: one found in a log directory belongs to the gateways
    whose logs are there; one named with --truth to the gateways that have its device (or, for
    truth-gateway.log or a device no log names, the only gateway in the report)."""
    out: Dict[Tuple[str, str], Truth] = {}
    for tr in truths:
        if tr.explicit:
            owners = [h for h, names in devices.items() if tr.clock in names] if tr.clock != "gateway" else []
            if not owners and len(gateways) == 1:
                owners = list(gateways)
            if not owners:
                stats.problems.append(f"{tr.path}: no single gateway in this report it belongs to "
                                      "(put it in its gateway's log directory)")
        else:
            owners = [h for h, g in gateways.items() if str(tr.path.parent) in g["dirs"]]
        for h in owners:
            out[(h, tr.clock)] = tr
    return out
