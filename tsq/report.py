"""`tsq report`: what the field logs prove, per gateway — its sources, its model and its devices.

Reads every gateway and device log under the given directories (rotated and gzipped files in
order) and reports each gateway (host id in the file headers) separately. What is known is kept
apart from noise: a device's provable figure is the error bound it was given; its ping residuals are
line noise, not its error; its true error is shown only where a truth log exists (the simulators':
truth-<device id>.log, truth-gateway.log, found in the log directories or named with --truth).
Gaps and coverage are measured against the poll interval the producer logged. Frequency drift, with
its standard error, once the model rows span a day. Exit status: 1 when a stated threshold
(--max-offset, --max-gap) was violated, 2 when the logs cannot be read. Needs numpy (the report
extra); allantools for ADEV/TDEV/MTIE and matplotlib for --png/--html.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

EXTRA_HINT = "install the report extra: pip install 'tsq-gateway[report]'"
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


class MissingExtra(RuntimeError):
    """A package of the report extra is not installed; the message is the one line to print."""


def analyse(paths: Sequence[str], since: Optional[int] = None, until: Optional[int] = None,
            devices: Optional[Sequence[str]] = None, truth: Sequence[str] = ()) -> Dict[str, Any]:
    """The report as one JSON-able dict (figures' data under "_plots")."""
    try:
        from tsq import report_stats
    except ImportError as exc:
        raise MissingExtra(f"tsq report needs {exc.name or 'numpy'}: {EXTRA_HINT}") from exc
    rep, plots = report_stats.analyse(paths, since, until, devices, truth)
    rep["_plots"] = plots
    return rep


# -- text ------------------------------------------------------------------------------------------
def fmt_ns(ns: Optional[float]) -> str:
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


def _dur(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 7200:
        return f"{s / 3600:.2f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.3g} s"


def _polls(s: Dict[str, Any]) -> str:
    lo, hi = s.get("poll_min_s"), s.get("poll_max_s")
    if lo is None or hi is None:
        return "-"
    return _dur(lo) if lo == hi else f"{lo:.3g}-{_dur(hi)}"


def _coverage(s: Dict[str, Any]) -> str:
    gaps = s.get("gap_count", 0)
    every = "poll interval not logged" if s.get("poll_min_s") is None else f"every {_polls(s)}"
    return (f"{s['rows']} rows over {_dur(s.get('span_s'))} ({every}), coverage {100 * s['coverage']:.1f}%, "
            f"{gaps} gap{'s' if gaps != 1 else ''}"
            + (f" (longest {_dur(s['longest_gap_s'])})" if gaps else ""))


def _states(st: Optional[Dict[str, Any]]) -> str:
    if not st:
        return "-"
    parts = [f"{name} {_dur(sec)}" for name, sec in sorted(st["seconds"].items(), key=lambda kv: -kv[1])]
    if st["no_rows_s"] > 0:
        parts.append(f"no rows {_dur(st['no_rows_s'])}")
    n = st["transition_count"]
    return ", ".join(parts) + f" ({n} change{'s' if n != 1 else ''} of state)"


def _spread(d: Optional[Dict[str, Any]]) -> str:
    if not d:
        return "-"
    return f"p50 {fmt_ns(d['p50_ns'])}, p99 {fmt_ns(d['p99_ns'])}, max {fmt_ns(d['max_ns'])}"


def _mag(d: Optional[Dict[str, Any]]) -> str:
    return "-" if not d else (f"rms {fmt_ns(d['rms_ns'])}, |p50| {fmt_ns(d['abs_p50_ns'])}, "
                              f"|p99| {fmt_ns(d['abs_p99_ns'])}, |max| {fmt_ns(d['abs_max_ns'])}")


def _truth(tr: Optional[Dict[str, Any]]) -> Optional[str]:
    if tr is None:
        return None
    name = Path(tr["file"]).name
    if tr["error"] is None:
        return f"true error ({name}): never synchronised in {tr['lines']} lines"
    return (f"true error ({name}, {tr['serving_lines']} lines serving time): {_mag(tr['error'])}; "
            f"outside its own bound: {tr['beyond_bound']}")


def _drift(f: Dict[str, Any]) -> str:
    if "mean_ppm" not in f:
        return "frequency: -"
    text = f"frequency {f['mean_ppm']:+.3f} ppm; drift "
    if "drift_ppm_per_day" in f:
        return text + f"{f['drift_ppm_per_day']:+.4f} ± {f['drift_se_ppm_per_day']:.4f} ppm/day (1 s.e.)"
    return text + f"not shown: {f['note']}"


def _series(rep: Dict[str, Any]) -> Iterator[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(gateway, series) for every source, model and device of the report."""
    for g in rep["gateways"]:
        for s in g["sources"]:
            yield g, s
        if g["model"]:
            yield g, g["model"]
        for d in g["devices"]:
            yield g, d


def render_table(rep: Dict[str, Any]) -> str:
    """A plain-text report for terminals."""
    out: List[str] = []
    for g in rep["gateways"]:
        who = f"gateway {g['host']}" + (f" ({g['hostname']})" if g["hostname"] else "")
        if not g["host_id_logged"]:
            who = f"gateway of {g['host']} (v1 logs: no host id)"
        versions = "/v".join(map(str, g["format_versions"]))
        out.append(f"{who}; logs in {', '.join(g['dirs'])}; format v{versions}")
        if g["sources"]:
            out.append(f"  {'source':<28} {'rows':>7} {'span':>9} {'poll':>8} {'cover':>6} {'gaps':>4} "
                       f"{'|offset| p50':>12} {'p99':>10} {'max':>10} {'model bound p99':>15}")
            for s in g["sources"]:
                o, b = s["offset"] or {}, s["model_bound"] or {}
                out.append(f"  {s['name'][:28]:<28} {s['rows']:>7} {_dur(s['span_s']):>9} "
                           f"{_polls(s):>8} {100 * s['coverage']:>5.1f}% {s['gap_count']:>4} "
                           f"{fmt_ns(o.get('abs_p50_ns')):>12} "
                           f"{fmt_ns(o.get('abs_p99_ns')):>10} {fmt_ns(o.get('abs_max_ns')):>10} "
                           f"{fmt_ns(b.get('p99_ns')):>15}")
            out.append("  (a source's offset is server minus model: an input, not the gateway's error)")
        m = g["model"]
        if m:
            out.append(f"  model: {_coverage(m)}")
            out.append(f"    states: {_states(m['states'])}")
            out.append("    error bound while synchronised/holdover (the provable figure): "
                       + _spread(m["bound"]))
            out.append("    system clock − model UTC (a comparison, not an error): "
                       + _mag(m["system_offset"]))
            out.append(f"    {_drift(m['frequency'])}")
            if (t := _truth(m["truth"])) is not None:
                out.append(f"    {t}")
        for d in g["devices"]:
            out.append(f"  device {d['name']}: " + (_coverage(d) if d.get("rows") else "no log rows"))
            if d.get("rows"):
                out.append(f"    states: {_states(d['states'])}; time in {d['timescale']}")
                out.append(f"    bound given (the provable figure): {_spread(d['bound_given'])}")
            if (t := _truth(d["truth"])) is not None:
                out.append(f"    {t}")
            if d.get("rows"):
                out.append(f"    line noise (ping residuals about the line fit, not the device's error): "
                           f"{_mag(d['line_noise'])}")
        out.append("")
    for g, s in _series(rep):
        for gap in s.get("gaps", [])[:10]:
            out.append(f"gap in {g['host']} {s['name']}: {gap['start']} .. {gap['end']} "
                       f"({gap['seconds']:.0f} s where a row was due every {gap['poll_s']:.3g} s)")
    for g, s in _series(rep):
        truth_st = (s.get("truth") or {}).get("stability")
        for label, st in (("", s.get("stability")), ("true error of ", truth_st)):
            if not st or not st["tau_s"]:
                continue
            out.append(f"stability of {label}{g['host']} {s['name']} (tau0 {st['tau0_s']:.3g} s, "
                       f"{st['segments']} segment(s))")
            out.append(f"  {'tau':>10} {'ADEV':>11} {'TDEV':>10} {'MTIE':>10}")
            for tau, ad, td, mt in zip(st["tau_s"], st["adev"], st["tdev_s"], st["mtie_s"]):
                out.append(f"  {tau:>9.4g}s {ad:>11.3e} {fmt_ns(td * 1e9):>10} {fmt_ns(mt * 1e9):>10}")
    if rep.get("stability_missing"):
        out.append(f"stability (ADEV/TDEV/MTIE) not computed: allantools is missing ({EXTRA_HINT})")
    if rep["torn_lines"] or rep["bad_lines"]:
        out.append(f"skipped: {rep['torn_lines']} torn line(s) (power loss), "
                   f"{rep['bad_lines']} malformed line(s)")
    for p in rep["problems"]:
        if p not in rep["errors"]:
            out.append(f"note: {p}")
    return "\n".join(out).rstrip("\n")


def violations(rep: Dict[str, Any], max_offset_ns: Optional[float], max_gap_ns: Optional[float]) -> List[str]:
    """Threshold violations, one sentence each. --max-offset applies to what is known of a clock
    (its true error where a truth log exists, else its error bound while serving time), never to
    line noise or to a source's offsets; --max-gap to every series."""
    out = []
    for g, s in _series(rep):
        who = f"{g['host']} {s['name']}"
        known = s.get("known")
        if max_offset_ns is not None and known is not None and known["max_ns"] > max_offset_ns:
            out.append(f"{who}: {known['what']} reached {fmt_ns(known['max_ns'])} > {fmt_ns(max_offset_ns)}")
        if max_gap_ns is not None and s.get("longest_gap_s", 0.0) * 1e9 > max_gap_ns:
            out.append(f"{who}: a gap of {s['longest_gap_s']:.0f} s > {max_gap_ns / 1e9:.0f} s")
    return out


# -- the command -----------------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="statistics, stability and plots from field logs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logdirs", nargs="+", metavar="LOGDIR", help="directories (or files) of field logs")
    p.add_argument("--since", type=parse_time_ns, metavar="T", help="ISO 8601 (UTC) or unix seconds")
    p.add_argument("--until", type=parse_time_ns, metavar="T")
    p.add_argument("--device", action="append", metavar="ID",
                   help="only this device (c0ffee01, 0xC0FFEE01, ...; repeatable)")
    p.add_argument("--truth", action="append", default=[], metavar="FILE|DIR",
                   help="truth log(s) of simulated clocks (truth-<id>.log, truth-gateway.log; repeatable)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--png", metavar="FILE", help="write the figures to one PNG (needs matplotlib)")
    out.add_argument("--html", metavar="DIR", help="write a static HTML page with figures and tables")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-offset", type=parse_duration_ns, metavar="D",
                   help="exit 1 if a clock's known error (true error, else its bound) exceeded D (e.g. 1ms)")
    p.add_argument("--max-gap", type=parse_duration_ns, metavar="D",
                   help="exit 1 if any series has a gap (a silence beyond its poll interval) longer than D")
    p.set_defaults(func=run)


def _fail(lines: Sequence[str]) -> int:
    for line in lines:
        print(f"tsq report: {line}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    missing = [d for d in args.logdirs if not Path(d).exists()]
    if missing:
        return _fail([f"no such file or directory: {', '.join(missing)}"])
    try:
        rep = analyse(args.logdirs, args.since, args.until, args.device, args.truth)
    except MissingExtra as exc:
        return _fail([str(exc)])
    plots = rep.pop("_plots")
    if rep["errors"]:
        return _fail(rep["errors"])
    if rep["unmatched_devices"]:
        seen = ", ".join(rep["devices_seen"]) or "none"
        unmatched = ", ".join(rep["unmatched_devices"])
        return _fail([f"no rows for device {unmatched} (devices in these logs: {seen})"])
    if not rep["gateways"]:
        return _fail(["no field-log rows found (expected gateway-*.csv[.gz] or devices-*.csv[.gz])"])
    rep["stability_missing"] = not _have("allantools")
    if args.png or args.html:
        if not _have("matplotlib"):
            return _fail([f"--png and --html need matplotlib: {EXTRA_HINT}"])
        from tsq.report_plot import write_html, write_png

        try:
            if args.png:
                write_png(plots, rep, args.png)
            else:
                write_html(plots, rep, render_table(rep), args.html)
        except OSError as exc:
            return _fail([f"cannot write the figure: {exc.strerror or exc}: {exc.filename or ''}"])
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(render_table(rep))
    bad = violations(rep, args.max_offset, args.max_gap)
    for line in bad:
        print(f"tsq report: THRESHOLD VIOLATED: {line}", file=sys.stderr)
    return 1 if bad else 0


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
