"""`tsq report`: what the field logs prove — statistics, stability and plots per server and device.

Reads every gateway and device log under the given directories (rotated and gzipped files in
order; torn last lines and gaps are reported), and for each server, the gateway model and each
device prints: samples, span, coverage and gaps, |offset| mean/RMS/p50/p95/p99/max, error-bound
statistics, how often the truth-side offset exceeded the bound, time unsynchronised or in holdover
(model), frequency and its drift, and ADEV/TDEV/MTIE at octave taus (tsq.stability). Exit status 1
when a stated threshold (--max-offset, --max-gap) was violated.
"""

from __future__ import annotations

import argparse
import array as _array
import datetime as _dt
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

from tsq.fieldlog import ReadStats, data_lines
from tsq.stability import stability

FloatArray = npt.NDArray[np.float64]
_UNITS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "min": 60e9, "h": 3600e9}


def parse_duration_ns(text: str) -> float:
    """'250us', '1.5 ms', '60s', '5min' -> nanoseconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(ns|us|µs|ms|s|min|h)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 250us, 1ms, 60s; got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_time_ns(text: str) -> int:
    """An ISO 8601 time (UTC if no zone) or a unix time in seconds -> unix ns."""
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time or unix seconds, got {text!r}") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return int(t.timestamp() * 1e9)


# -- reading: columns into numpy in chunks, so a month of logs stays within a few hundred MB -------
STATES = ("synchronised", "holdover", "unsynchronised")
_CHUNK = 20_000


@dataclass
class Columns:
    """One stream's rows as numpy columns, grouped by a key column: times as int64 unix ns, numbers
    as float32 (NaN for empty cells), the `state` column as codes into STATES (-1: other)."""

    groups: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    stats: ReadStats = field(default_factory=ReadStats)


class _Group:
    # Converted chunks are appended to growing stdlib arrays (realloc'd in place, ~12 % slack), not
    # kept as many small numpy arrays: that fragments the heap and costs hundreds of MB on a month.
    _TYPECODES: ClassVar[Dict[str, Tuple[str, Any]]] = {"time_utc": ("q", np.int64), "state": ("b", np.int8)}

    def __init__(self, wanted: Tuple[str, ...], stats: ReadStats) -> None:
        self.wanted = wanted
        self.stats = stats
        self.pending: Dict[str, List[str]] = {c: [] for c in wanted}
        self.buffers = {c: _array.array(self._TYPECODES.get(c, ("f", np.float32))[0]) for c in wanted}

    def flush(self) -> None:
        """Convert the pending rows; a row with a cell that does not parse is dropped and counted
        (the chunk is converted whole first, row by row only when that fails)."""
        n = len(self.pending[self.wanted[0]])
        if not n:
            return
        try:
            converted = {c: _convert(c, v) for c, v in self.pending.items()}
        except ValueError:
            good = [i for i in range(n) if self._row_parses(i)]
            self.stats.bad_lines += n - len(good)
            self.stats.rows -= n - len(good)
            converted = {c: _convert(c, [v[i] for i in good]) for c, v in self.pending.items()}
        for c, arr in converted.items():
            self.buffers[c].frombytes(arr.tobytes())
            self.pending[c] = []

    def _row_parses(self, i: int) -> bool:
        try:
            for c, v in self.pending.items():
                _convert(c, [v[i]])
        except ValueError:
            return False
        return True

    def arrays(self) -> Dict[str, Any]:
        """One numpy array per column, sharing the buffers' memory."""
        self.flush()
        return {c: np.frombuffer(self.buffers[c], dtype=self._TYPECODES.get(c, ("f", np.float32))[1])
                for c in self.wanted}


def _convert(column: str, values: List[str]) -> Any:
    if column == "time_utc":
        return to_ns(values)
    if column == "state":
        codes = {s: i for i, s in enumerate(STATES)}
        return np.array([codes.get(v, -1) for v in values], dtype=np.int8)
    return to_float(values).astype(np.float32)


def read_columns(dirs: Iterable[str], stream: str, key: Optional[str], wanted: Tuple[str, ...]) -> Columns:
    """Read `wanted` columns of every row of `stream`, grouped by column `key` ('' if None).

    Lines are split on commas (the writer never quotes these columns): a line whose field count is
    off is counted as malformed, not parsed with csv, which keeps a month within a minute."""
    out = Columns()
    st = out.stats
    groups: Dict[str, _Group] = {}
    last_header: Optional[List[str]] = None  # data_lines yields one header list per file
    cols: Optional[Tuple[List[int], int]] = None
    for header, line in data_lines(dirs, stream, st):
        if header is not last_header:
            last_header = header
            try:
                cols = ([header.index(c) for c in wanted], header.index(key) if key else -1)
            except ValueError:
                cols = None
                st.problems.append(f"{stream}: a file lacks some of the columns {', '.join(wanted)}")
        if cols is None:
            continue
        idx, kidx = cols
        parts = line.split(",")
        if len(parts) != len(header):
            st.bad_lines += 1  # a quoted comma or a damaged line: skipped, counted
            continue
        name = parts[kidx] if key else ""
        g = groups.get(name)
        if g is None:
            g = groups[name] = _Group(wanted, st)
        for c, i in zip(wanted, idx):
            g.pending[c].append(parts[i])
        if len(g.pending[wanted[0]]) >= _CHUNK:
            g.flush()
        st.rows += 1
    out.groups = {name: g.arrays() for name, g in groups.items()}
    return out


def to_ns(times: List[str]) -> npt.NDArray[np.int64]:
    """RFC 3339 UTC strings (…Z) -> int64 unix ns, vectorised."""
    arr = np.array([t[:-1] if t.endswith("Z") else t for t in times], dtype="datetime64[ns]")
    return arr.astype(np.int64)


def to_float(values: List[str]) -> FloatArray:
    """Numeric strings -> float64; empty cells become NaN."""
    arr = np.array(values, dtype=object)
    arr[arr == ""] = "nan"
    return arr.astype(np.float64)


# -- statistics ----------------------------------------------------------------------------------
def series_stats(name: str, kind: str, t_ns: npt.NDArray[np.int64], offset_ns: FloatArray,
                 bound_ns: Optional[FloatArray], gap_threshold_ns: Optional[float]) -> Dict[str, Any]:
    """The per-series figures of the report."""
    if len(t_ns) > 1 and bool((np.diff(t_ns) < 0).any()):  # logs are in order; sort only if not
        order = np.argsort(t_ns, kind="stable")
        t_ns, offset_ns = t_ns[order], offset_ns[order]
        bound_ns = bound_ns[order] if bound_ns is not None else None
    bound = bound_ns
    ok = ~np.isnan(offset_ns)
    # Values stay float32 (ns of offset: 7 digits are plenty); sums accumulate in float64.
    t_ok, off = (t_ns, offset_ns) if ok.all() else (t_ns[ok], offset_ns[ok])
    res: Dict[str, Any] = {"name": name, "kind": kind, "samples": len(t_ns)}
    if len(t_ok) == 0:
        return res
    span = float(t_ok[-1] - t_ok[0])
    dt = np.diff(t_ok).astype(np.float64)
    spacing = float(np.median(dt)) if len(dt) else 0.0
    threshold = gap_threshold_ns if gap_threshold_ns is not None else max(10 * spacing, 60e9)
    gi = np.nonzero(dt > threshold)[0]
    gaps = [{"start": _iso(int(t_ok[i])), "end": _iso(int(t_ok[i + 1])), "seconds": float(dt[i]) / 1e9}
            for i in gi]
    a = np.abs(off)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    res.update({
        "first": _iso(int(t_ok[0])), "last": _iso(int(t_ok[-1])), "span_s": span / 1e9,
        "median_spacing_s": spacing / 1e9,
        "coverage": 1.0 - (float(dt[gi].sum()) / span if span > 0 else 0.0),
        "gaps": gaps, "longest_gap_s": float(dt[gi].max()) / 1e9 if len(gi) else 0.0,
        "offset_mean_ns": float(off.mean(dtype=np.float64)),
        "offset_rms_ns": float(np.sqrt(np.square(off, dtype=np.float64).mean())),
        "abs_offset_p50_ns": float(p50), "abs_offset_p95_ns": float(p95),
        "abs_offset_p99_ns": float(p99), "abs_offset_max_ns": float(a.max()),
    })
    if bound is not None:
        b = bound[ok]
        bk = ~np.isnan(b)
        if bk.any():
            res.update({"bound_mean_ns": float(b[bk].mean(dtype=np.float64)),
                        "bound_p99_ns": float(np.percentile(b[bk], 99)),
                        "bound_max_ns": float(b[bk].max()),
                        "offset_beyond_bound": int((a[bk] > b[bk]).sum())})
    del a, dt, gi  # a month at 1/s is 2.6 M samples a series: free what is no longer needed
    if len(t_ok) >= 4 and _have_allantools():
        # Decimate before converting (stability() would anyway): keeps the peak memory down.
        step = max(1, -(-len(t_ok) // STABILITY_POINTS))
        ts = (t_ok[::step] - t_ok[0]).astype(np.float64) / 1e9
        st = stability(ts, off[::step].astype(np.float64) / 1e9, max_points=STABILITY_POINTS)
        res["stability"] = {"tau0_s": st.tau0_s, "segments": st.segments, "tau_s": st.taus_s,
                            "adev": st.adev, "tdev_s": st.tdev_s, "mtie_s": st.mtie_s}
    return res


def _have_allantools() -> bool:
    try:
        import allantools  # noqa: F401
    except ImportError:
        return False
    return True


def model_stats(t_ns: npt.NDArray[np.int64], state: Any, freq: Any) -> Dict[str, Any]:
    """Time in each state (each row holds until the next) and the frequency and its drift."""
    order = np.argsort(t_ns, kind="stable")
    t_ns = t_ns[order]
    states = state[order]
    freq = freq[order].astype(np.float64)
    dur = np.diff(t_ns).astype(np.float64) / 1e9
    total = float(dur.sum()) if len(dur) else 0.0
    out: Dict[str, Any] = {"updates": len(t_ns)}
    for code, s in enumerate(STATES):
        out[f"time_{s}_s"] = float(dur[states[:-1] == code].sum()) if len(dur) else 0.0
    out["time_total_s"] = total
    ok = ~np.isnan(freq)
    if ok.sum() >= 2:
        days = (t_ns[ok] - t_ns[ok][0]).astype(np.float64) / 86400e9
        out["freq_mean_ppm"] = float(freq[ok].mean())
        out["freq_drift_ppm_per_day"] = float(np.polyfit(days, freq[ok], 1)[0]) if np.ptp(days) > 0 else 0.0
    return out


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(t: npt.NDArray[np.int64], since: Optional[int], until: Optional[int]) -> npt.NDArray[np.bool_]:
    keep = np.ones(len(t), dtype=bool)
    if since is not None:
        keep &= t >= since
    if until is not None:
        keep &= t <= until
    return keep


PLOT_POINTS = 20_000  # per series; more would not show on a figure
STABILITY_POINTS = 200_000  # per series, evenly decimated beyond (MTIE's cost grows with length)


def analyse(dirs: List[str], since: Optional[int] = None, until: Optional[int] = None,
            device: Optional[str] = None, gap_threshold_ns: Optional[float] = None) -> Dict[str, Any]:
    """Everything the report shows, as one JSON-able dict (plus, under "_plots", each series
    decimated for the figures). Each group's columns are dropped once its statistics are done."""
    report: Dict[str, Any] = {"series": [], "model": None, "problems": [], "torn_lines": 0, "bad_lines": 0}
    plots: Dict[str, Tuple[Any, Any, Any]] = {}

    def keep_for_plot(label: str, t: Any, off: Any, bd: Any) -> None:
        step = max(1, len(t) // PLOT_POINTS)
        plots[label] = (t[::step].copy(), off[::step].astype(np.float64), bd[::step].astype(np.float64))

    def take(cols: Columns) -> None:
        report["problems"] += cols.stats.problems
        report["torn_lines"] += cols.stats.torn_lines
        report["bad_lines"] += cols.stats.bad_lines

    if device is None:
        srv = read_columns(dirs, "gateway-samples", "server", ("time_utc", "offset_ns", "error_bound_ns"))
        take(srv)
        for name in sorted(srv.groups):
            c = srv.groups.pop(name)
            t = c["time_utc"]
            k = _window(t, since, until)
            off, bd = c["offset_ns"][k], c["error_bound_ns"][k]
            report["series"].append(series_stats(name, "server", t[k], off, bd, gap_threshold_ns))
            keep_for_plot(f"server {name}", t[k], off, bd)
        mod = read_columns(dirs, "gateway-model", None, ("time_utc", "state", "offset_ns", "freq_ppm",
                                                          "error_bound_ns"))
        take(mod)
        mc = mod.groups.get("")
        if mc is not None:
            t = mc["time_utc"]
            k = _window(t, since, until)
            m = model_stats(t[k], mc["state"][k], mc["freq_ppm"][k])
            off, bd = mc["offset_ns"][k], mc["error_bound_ns"][k]
            m.update(series_stats("gateway model (system clock − model)", "model", t[k], off, bd,
                                  gap_threshold_ns))
            report["model"] = m
            keep_for_plot("gateway model", t[k], off, bd)
    dev = read_columns(dirs, "devices", "device", ("time_utc", "residual_ns", "bound_ns"))
    take(dev)
    for name in sorted(dev.groups):
        c = dev.groups.pop(name)
        if device is not None and name != device:
            continue
        t = c["time_utc"]
        k = _window(t, since, until)
        off, bd = c["residual_ns"][k], c["bound_ns"][k]
        report["series"].append(series_stats(name, "device", t[k], off, bd, gap_threshold_ns))
        keep_for_plot(f"device {name}", t[k], off, bd)
    report["_plots"] = plots
    return report


# -- output ----------------------------------------------------------------------------------------
def _fmt(ns: Optional[float]) -> str:
    if ns is None or ns != ns:
        return "-"
    a = abs(ns)
    if a >= 1e9:
        return f"{ns / 1e9:.3f} s"
    if a >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if a >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def render_table(rep: Dict[str, Any]) -> str:
    """A plain-text report for terminals."""
    lines = []
    rows = list(rep["series"])
    if rep.get("model"):
        rows.insert(0, rep["model"])
    lines.append(f"{'series':<40} {'samples':>8} {'span':>9} {'cover':>6} {'mean':>10} {'rms':>10} "
                 f"{'p50':>10} {'p95':>10} {'p99':>10} {'max':>10} {'bound p99':>10} {'>bound':>6}")
    for s in rows:
        if "first" not in s:
            lines.append(f"{s['name']:<40} {s['samples']:>8}  (no values)")
            continue
        figures = [_fmt(s[k]) for k in ("offset_mean_ns", "offset_rms_ns", "abs_offset_p50_ns",
                                         "abs_offset_p95_ns", "abs_offset_p99_ns", "abs_offset_max_ns")]
        figures.append(_fmt(s.get("bound_p99_ns")))
        lines.append(f"{s['name'][:40]:<40} {s['samples']:>8} {s['span_s'] / 3600:>8.2f}h "
                     f"{100 * s['coverage']:>5.1f}% " + " ".join(f"{x:>10}" for x in figures)
                     + f" {s.get('offset_beyond_bound', '-'):>6}")
    m = rep.get("model")
    if m:
        tot = m["time_total_s"] or 1.0
        lines.append("")
        lines.append(f"gateway model: {m['updates']} updates; "
                     f"synchronised {100 * m['time_synchronised_s'] / tot:.1f}%, "
                     f"holdover {100 * m['time_holdover_s'] / tot:.1f}%, "
                     f"unsynchronised {100 * m['time_unsynchronised_s'] / tot:.1f}% of {tot / 3600:.2f} h; "
                     f"frequency {m.get('freq_mean_ppm', float('nan')):+.3f} ppm, drift "
                     f"{m.get('freq_drift_ppm_per_day', float('nan')):+.4f} ppm/day")
    for s in rows:
        st = s.get("stability")
        if not st or not st["tau_s"]:
            continue
        lines.append("")
        lines.append(f"stability of {s['name']} (tau0 {st['tau0_s']:.3g} s, {st['segments']} segment(s))")
        lines.append(f"  {'tau':>10} {'ADEV':>11} {'TDEV':>10} {'MTIE':>10}")
        for tau, ad, td, mt in zip(st["tau_s"], st["adev"], st["tdev_s"], st["mtie_s"]):
            lines.append(f"  {tau:>9.4g}s {ad:>11.3e} {_fmt(td * 1e9):>10} {_fmt(mt * 1e9):>10}")
    for s in rows:
        for g in s.get("gaps", [])[:10]:
            lines.append(f"gap in {s['name']}: {g['start']} .. {g['end']} ({g['seconds']:.0f} s)")
    if rep["torn_lines"] or rep["bad_lines"]:
        lines.append(f"skipped: {rep['torn_lines']} torn line(s) (power loss), "
                     f"{rep['bad_lines']} malformed line(s)")
    return "\n".join(lines)


def violations(rep: Dict[str, Any], max_offset_ns: Optional[float], max_gap_ns: Optional[float]) -> List[str]:
    """Threshold violations, one sentence each."""
    out = []
    rows = list(rep["series"]) + ([rep["model"]] if rep.get("model") else [])
    for s in rows:
        if "first" not in s:
            continue
        if max_offset_ns is not None and s["abs_offset_max_ns"] > max_offset_ns:
            out.append(f"{s['name']}: |offset| reached {_fmt(s['abs_offset_max_ns'])} "
                       f"> {_fmt(max_offset_ns)}")
        if max_gap_ns is not None and s["longest_gap_s"] * 1e9 > max_gap_ns:
            out.append(f"{s['name']}: a gap of {s['longest_gap_s']:.0f} s > {max_gap_ns / 1e9:.0f} s")
    return out


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="statistics, stability and plots from field logs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logdirs", nargs="+", metavar="LOGDIR", help="directories (or files) of field logs")
    p.add_argument("--since", type=parse_time_ns, metavar="T", help="ISO 8601 (UTC) or unix seconds")
    p.add_argument("--until", type=parse_time_ns, metavar="T")
    p.add_argument("--device", metavar="ID", help="only this device (e.g. 0x00c0ffee)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--png", metavar="FILE", help="write the figures to one PNG (needs tsq[report])")
    out.add_argument("--html", metavar="DIR", help="write a static HTML page with figures and tables")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-offset", type=parse_duration_ns, metavar="D",
                   help="exit 1 if any |offset| exceeded D (e.g. 1ms)")
    p.add_argument("--max-gap", type=parse_duration_ns, metavar="D",
                   help="exit 1 if any series has a gap longer than D (e.g. 60s); also the gap threshold")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = [d for d in args.logdirs if not Path(d).exists()]
    if missing:
        print(f"tsq report: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    rep = analyse(args.logdirs, args.since, args.until, args.device, args.max_gap)
    plots = rep.pop("_plots")
    if not rep["series"] and not rep.get("model"):
        print("tsq report: no field-log rows found (expected gateway-*.csv[.gz] or devices-*.csv[.gz])",
              file=sys.stderr)
        return 2
    if args.png or args.html:
        from tsq.report_plot import write_html, write_png

        if args.png:
            write_png(plots, rep, args.png)
        else:
            write_html(plots, rep, render_table(rep), args.html)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(render_table(rep))
    bad = violations(rep, args.max_offset, args.max_gap)
    for line in bad:
        print(f"tsq report: THRESHOLD VIOLATED: {line}", file=sys.stderr)
    return 1 if bad else 0
