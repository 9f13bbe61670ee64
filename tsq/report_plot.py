"""Figures for `tsq report` (matplotlib, from the report extra)."""

from __future__ import annotations

import datetime as dt
import html
import os
from typing import Any, Dict, List, Tuple

import numpy as np

from tsq.report_stats import Plot


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unit(values: Any) -> Tuple[float, str]:
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    a = float(v.max()) if len(v) else 0.0
    if a >= 1e6:
        return 1e6, "ms"
    if a >= 1e3:
        return 1e3, "µs"
    return 1.0, "ns"


def _time_axis(span_s: float) -> Tuple[float, str]:
    if span_s > 7200:
        return 3600.0, "hours"
    if span_s > 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


def figure(plots: List[Plot], rep: Dict[str, Any]) -> Any:
    """One figure: per series a time plot (what it is about, ± bound, noise in grey) and a histogram
    of its main trace; then ADEV and TDEV of every series that has them."""
    plt = _plt()
    plots = [p for p in plots if any(len(tr.t_ns) for tr in p.traces)]
    n = max(1, len(plots))
    fig = plt.figure(figsize=(13, 3.0 * n + 4.0), constrained_layout=True)
    gs = fig.add_gridspec(n + 1, 3)
    for i, p in enumerate(plots):
        t0 = min(int(tr.t_ns[0]) for tr in p.traces if len(tr.t_ns))
        t1 = max(int(tr.t_ns[-1]) for tr in p.traces if len(tr.t_ns))
        tdiv, tunit = _time_axis((t1 - t0) / 1e9)
        scale, unit = _unit(np.concatenate([tr.y_ns for tr in p.traces] or [np.zeros(0)]))
        ax = fig.add_subplot(gs[i, :2])
        for tr in p.traces:
            x = (tr.t_ns - t0) / 1e9 / tdiv
            if tr.style == "bound":
                line = ax.plot(x, tr.y_ns / scale, "-", lw=0.8, color="tab:red", label=f"± {tr.label}")
                ax.plot(x, -tr.y_ns / scale, "-", lw=0.8, color=line[0].get_color())
            elif tr.style == "noise":
                ax.plot(x, tr.y_ns / scale, ".", ms=1.5, color="0.6", label=tr.label)
            else:
                ax.plot(x, tr.y_ns / scale, ".", ms=2, color="tab:blue", label=tr.label)
        ax.set_title(p.title)
        ax.set_xlabel(f"{tunit} since {_utc(t0)}")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=7)
        main = next((tr for tr in p.traces if tr.style == "points"), None) or p.traces[0]
        hx = fig.add_subplot(gs[i, 2])
        y = main.y_ns[np.isfinite(main.y_ns)]
        hx.hist(y / scale, bins=60, color="0.6" if main.style == "noise" else "tab:blue")
        hx.set_title(f"{main.label}: histogram", fontsize=9)
        hx.set_xlabel(unit)
        hx.set_ylabel("rows")
    ax_a = fig.add_subplot(gs[n, :2])
    ax_t = fig.add_subplot(gs[n, 2])
    for g in rep["gateways"]:
        series = list(g["sources"]) + ([g["model"]] if g["model"] else []) + list(g["devices"])
        for s in series:
            for label, st in ((s["name"], s.get("stability")),
                              (f"{s['name']} true error", (s.get("truth") or {}).get("stability"))):
                if st and st["tau_s"]:
                    ax_a.loglog(st["tau_s"], st["adev"], "o-", ms=3, label=label[:34])
                    ax_t.loglog(st["tau_s"], np.array(st["tdev_s"]) * 1e9, "o-", ms=3, label=label[:34])
    ax_a.set_title("overlapping Allan deviation")
    ax_a.set_xlabel("averaging time τ [s]")
    ax_a.set_ylabel("ADEV σ_y(τ) [dimensionless]")
    ax_t.set_title("time deviation")
    ax_t.set_xlabel("averaging time τ [s]")
    ax_t.set_ylabel("TDEV [ns]")
    for ax in (ax_a, ax_t):
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(int(ns) / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_png(plots: List[Plot], rep: Dict[str, Any], path: str) -> None:
    fig = figure(plots, rep)
    try:
        fig.savefig(path, dpi=90)
    finally:
        _plt().close(fig)


def write_html(plots: List[Plot], rep: Dict[str, Any], table: str, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    write_png(plots, rep, os.path.join(directory, "report.png"))
    with open(os.path.join(directory, "index.html"), "w", encoding="utf-8") as f:
        f.write("<!doctype html><meta charset=utf-8><title>tsq report</title>"
                "<h1>TSQ field report</h1><pre>" + html.escape(table) + "</pre>"
                "<img src=report.png alt='bounds, true error, line noise, ADEV, TDEV' "
                "style='max-width:100%'>\n")
