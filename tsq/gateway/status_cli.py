"""`tsq status`: what the running daemon (`tsq sync` or `tsq bridge`) says, over its control socket.

The human view reads like `chronyc tracking` followed by `chronyc sources` and a device table;
`--json` prints the daemon's status object as is (docs/internals.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, List, Mapping, Optional, Sequence

from tsq.gateway.control import ControlError, query_status
from tsq.sync.tracking import TrackingStatus

# chronyc's source state column: * selected, + combined, - candidate not combined, x falseticker,
# ? unusable.
SELECTION_MARK = {"selected": "*", "combined": "+", "candidate": "-", "falseticker": "x", "unusable": "?"}
LEAP_TEXT = {0: "Normal", 1: "Insert second", 2: "Delete second", 3: "Not synchronised"}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status", help="show the running daemon's tracking, sources and devices",
        description="Ask the running `tsq sync` or `tsq bridge` for its state over the control socket "
        "and print it like `chronyc tracking` + `chronyc sources` (or as JSON).",
    )
    p.add_argument("--control", metavar="PATH", help="control socket (default: as `tsq sync`)")
    p.add_argument("--json", action="store_true", help="print the status object as JSON")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="answer timeout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        status = query_status(args.control, timeout_s=args.timeout)
    except ControlError as exc:
        print(f"tsq status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render(status))
    return 0


# ------------------------------------------------------------------------------------------ formatting
def fmt_ns(value: Any, signed: bool = False) -> str:
    """Nanoseconds in the unit that keeps 4 significant digits readable: ns, us, ms, s."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    sign = "+" if signed and value >= 0 else ""
    mag = abs(value)
    if mag < 1_000:
        return f"{sign}{value:.0f}ns"
    if mag < 1_000_000:
        return f"{sign}{value / 1e3:.3f}us"
    if mag < 1_000_000_000:
        return f"{sign}{value / 1e6:.3f}ms"
    return f"{sign}{value / 1e9:.3f}s"


def _num(value: Any, fmt: str, suffix: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return format(value, fmt) + suffix


def _age(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.0f}h"


def _reach(value: Any) -> str:
    # chronyc prints the 8-bit reachability register in octal
    return f"{value:o}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def render_tracking(st: Mapping[str, Any]) -> List[str]:
    """The `chronyc tracking`-like block."""
    sys_off = st.get("system_offset_ns")
    if isinstance(sys_off, (int, float)) and not isinstance(sys_off, bool):
        side = "fast" if sys_off > 0 else "slow"
        system = f"{fmt_ns(sys_off, signed=True)} ({fmt_ns(abs(sys_off))} {side} of model UTC)"
    else:
        system = "-"
    freq = _num(st.get("freq_ppm"), "+.3f", " ppm")
    if st.get("freq_error_ppm") is not None and freq != "-":
        freq += f" ± {_num(st.get('freq_error_ppm'), '.3f')}"
    last = str(st.get("last_update_utc") or "-")
    if st.get("last_update_age_s") is not None:
        last += f" ({_age(st.get('last_update_age_s'))} ago)"
    leap = st.get("leap")
    rows = [
        ("State", str(st.get("state") or "-")),
        ("Time (UTC)", str(st.get("time_utc") or "-")),
        ("System clock", system),
        ("Frequency", freq + (" (UTC rate vs raw clock)" if freq != "-" else "")),
        ("Error bound", fmt_ns(st.get("error_bound_ns"))),
        ("Leap status", LEAP_TEXT.get(leap, "-") if isinstance(leap, int) else "-"),
        ("Last update", last),
        ("Reason", str(st.get("reason") or "-")),
        ("Poll interval", _num(st.get("poll_s"), ".0f", " s")),
    ]
    return [f"{name:<15} : {value}" for name, value in rows]


SOURCE_HEADER = (f"S {'Name/Address':<26} {'Mode':<8} {'Offset':>11} {'Delay':>10} {'Jitter':>10} "
                 f"{'Reach':>5} {'Samp':>4} {'Last':>6} {'Str':>3}")


def render_sources(sources: Sequence[Mapping[str, Any]]) -> List[str]:
    """The `chronyc sources`-like table: one line per source."""
    lines = [SOURCE_HEADER, "=" * len(SOURCE_HEADER)]
    for s in sources:
        mark = SELECTION_MARK.get(str(s.get("selection")), "?")
        lines.append(
            f"{mark} {str(s.get('name', '-'))[:26]:<26} {str(s.get('mode') or '-')[:8]:<8} "
            f"{fmt_ns(s.get('offset_ns'), signed=True):>11} {fmt_ns(s.get('delay_ns')):>10} "
            f"{fmt_ns(s.get('jitter_ns')):>10} {_reach(s.get('reach')):>5} {_num(s.get('samples'), 'd'):>4} "
            f"{_age(s.get('last_sample_age_s')):>6} {_num(s.get('stratum'), 'd'):>3}"
        )
    lines.append("  (* selected, + combined, - candidate, x falseticker, ? unusable)")
    return lines


DEVICE_HEADER = (f"{'Device':<12} {'Port':<16} {'State':<15} {'Residual':>10} {'Line delay':>10} "
                 f"{'Bound':>10} {'Seen':>6} {'Bad':>5}")


def render_devices(devices: Sequence[Mapping[str, Any]]) -> List[str]:
    """One line per serial device of the bridge, then indented: why its port cannot be opened (and
    what to do), or the link and whether low latency is set."""
    lines = [DEVICE_HEADER, "=" * len(DEVICE_HEADER)]
    for d in devices:
        lines.append(
            f"{str(d.get('device') or '-')[:12]:<12} {str(d.get('port') or '-')[-16:]:<16} "
            f"{str(d.get('state') or '-')[:15]:<15} {fmt_ns(d.get('residual_ns'), signed=True):>10} "
            f"{fmt_ns(d.get('line_delay_ns')):>10} {fmt_ns(d.get('bound_ns')):>10} "
            f"{_age(d.get('last_seen_age_s')):>6} {_num(d.get('bad_frames'), 'd'):>5}"
        )
        if d.get("port_error"):
            lines.append(f"  ! {d['port_error']}")
            if d.get("port_hint"):
                lines.append(f"    {d['port_hint']}")
            continue
        detail = []
        if d.get("link"):
            detail.append(f"link {d['link']}")
        if d.get("low_latency"):
            detail.append(f"low latency {d['low_latency']}")
        implausible = d.get("implausible_frames")
        if isinstance(implausible, int) and not isinstance(implausible, bool) and implausible > 0:
            detail.append(f"{implausible} frame(s) with nonsense fields dropped")
        if detail:
            lines.append(f"  {', '.join(detail)}")
        ppm = d.get("source_ppm")
        if isinstance(ppm, (int, float)) and not isinstance(ppm, bool):
            lines.append(f"  ! timescales withheld: the time source runs {ppm:+.0f} ppm from the device's "
                         "clock (a device accepts ±1000 ppm): is the system clock being stepped or slewed?")
    return lines


def render(status: Mapping[str, Any]) -> str:
    """The whole human view of a status object (tolerates missing and null fields)."""
    lines = render_tracking(status)
    sources = status.get("sources")
    if isinstance(sources, list):
        lines += ["", *render_sources([s for s in sources if isinstance(s, dict)])]
    devices = status.get("devices")
    if isinstance(devices, list) and devices:
        lines += ["", *render_devices([d for d in devices if isinstance(d, dict)])]
    return "\n".join(lines)


def summary_line(tracking: TrackingStatus) -> str:
    """One line per update for the daemon's log: state, system offset, bound, frequency, sources."""
    marks = "".join(SELECTION_MARK.get(s.selection, "?") for s in tracking.sources)
    return (f"{tracking.state} system {fmt_ns(tracking.system_offset_ns, signed=True)} "
            f"bound {fmt_ns(tracking.error_bound_ns)} "
            f"freq {_num(tracking.freq_ppm, '+.3f', 'ppm')} "
            f"sources [{marks}]")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m tsq.gateway.status_cli` (the same as `tsq status`)."""
    parser = argparse.ArgumentParser(prog="tsq")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["status", *(argv or [])])
    rc: int = args.func(args)
    return rc

