"""Figures for `tsq report` (matplotlib, the optional extra `tsq[report]`)."""

from __future__ import annotations

import html
import os
from typing import Any, Dict, Tuple

import numpy as np


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the extra is installed for tests
        raise SystemExit("tsq report: plots need matplotlib: pip install 'tsq[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unit(values: Any) -> Tuple[float, str]:
    a = np.nanmax(np.abs(values)) if len(values) else 0.0
    if a >= 1e6:
        return 1e6, "ms"
    if a >= 1e3:
        return 1e3, "µs"
    return 1.0, "ns"


def figure(plots: Dict[str, Tuple[Any, Any, Any]], rep: Dict[str, Any]) -> Any:
    """One figure: per series a time plot (offset and ±bound) and a histogram; then ADEV/TDEV."""
    plt = _plt()
    names = list(plots)
    n = max(1, len(names))
    fig = plt.figure(figsize=(13, 3.0 * n + 4.0), constrained_layout=True)
    gs = fig.add_gridspec(n + 1, 3)
    for i, name in enumerate(names):
        t, off, bound = plots[name]
        if len(t) == 0:
            continue
        span = (t[-1] - t[0]) / 1e9
        tdiv, tunit = (1.0, "seconds")
        if span > 7200:
            tdiv, tunit = 3600.0, "hours"
        elif span > 120:
            tdiv, tunit = 60.0, "minutes"
        hours = (t - t[0]) / 1e9 / tdiv
        scale, unit = _unit(np.concatenate([off[~np.isnan(off)], bound[~np.isnan(bound)]]))
        ax = fig.add_subplot(gs[i, :2])
        ax.plot(hours, off / scale, ".", ms=2, label="offset")
        ax.plot(hours, bound / scale, "-", lw=0.8, color="tab:red", label="± error bound")
        ax.plot(hours, -bound / scale, "-", lw=0.8, color="tab:red")
        ax.set_title(f"{name}: offset and error bound")
        ax.set_xlabel(f"{tunit} since {rep_time(t[0])}")
        ax.set_ylabel(f"offset [{unit}]")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        hx = fig.add_subplot(gs[i, 2])
        hx.hist(off[~np.isnan(off)] / scale, bins=60, color="tab:blue")
        hx.set_title(f"{name}: offset histogram")
        hx.set_xlabel(f"offset [{unit}]")
        hx.set_ylabel("samples")
    ax_a = fig.add_subplot(gs[n, :2])
    ax_t = fig.add_subplot(gs[n, 2])
    rows = list(rep["series"]) + ([rep["model"]] if rep.get("model") else [])
    for s in rows:
        st = s.get("stability")
        if st and st["tau_s"]:
            ax_a.loglog(st["tau_s"], st["adev"], "o-", ms=3, label=s["name"][:30])
            ax_t.loglog(st["tau_s"], np.array(st["tdev_s"]) * 1e9, "o-", ms=3, label=s["name"][:30])
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


def rep_time(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(int(ns) / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_png(plots: Dict[str, Tuple[Any, Any, Any]], rep: Dict[str, Any], path: str) -> None:
    fig = figure(plots, rep)
    fig.savefig(path, dpi=90)
    _plt().close(fig)


def write_html(plots: Dict[str, Tuple[Any, Any, Any]], rep: Dict[str, Any], table: str,
               directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    write_png(plots, rep, os.path.join(directory, "report.png"))
    with open(os.path.join(directory, "index.html"), "w", encoding="utf-8") as f:
        f.write("<!doctype html><meta charset=utf-8><title>tsq report</title>"
                "<h1>TSQ field report</h1><pre>" + html.escape(table) + "</pre>"
                "<img src=report.png alt='offset, bound, histogram, ADEV, TDEV' style='max-width:100%'>\n")
