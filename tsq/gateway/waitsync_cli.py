"""`tsq waitsync`: wait until the running gateway is synchronised (for boot ordering, like
`chronyc waitsync`): exit 0 once its state is synchronised (and, with --max-error, its error bound
is at most that), exit 1 when --timeout passes first (or the daemon is not there at all by then).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, Optional

from tsq.gateway.control import ControlError, query_status
from tsq.gateway.status_cli import fmt_ns


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("waitsync", help="wait until the gateway is synchronised (boot ordering)",
                       description=__doc__)
    p.add_argument("--timeout", type=float, default=0.0, metavar="S",
                   help="give up after S seconds (default 0: wait forever)")
    p.add_argument("--max-error", type=float, default=None, metavar="S",
                   help="also wait until the error bound is at most S seconds (e.g. 0.001)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="poll interval (default 1)")
    p.add_argument("--control", metavar="PATH", help="control socket (default: as the daemon's)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    p.set_defaults(func=run)


def ready(status: Dict[str, Any], max_error_ns: Optional[int]) -> bool:
    if status.get("state") != "synchronised":
        return False
    bound = status.get("error_bound_ns")
    return max_error_ns is None or (isinstance(bound, (int, float)) and bound <= max_error_ns)


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.timeout < 0 or (args.max_error is not None and args.max_error <= 0):
        print("tsq waitsync: --interval and --max-error must be positive, --timeout not negative",
              file=sys.stderr)
        return 2
    max_error_ns = None if args.max_error is None else round(args.max_error * 1e9)
    deadline = None if args.timeout <= 0 else time.monotonic() + args.timeout
    last = "no answer yet"
    while True:
        try:
            status = query_status(args.control, timeout_s=min(3.0, args.interval * 3))
            if ready(status, max_error_ns):
                if not args.quiet:
                    print(f"synchronised, error bound {fmt_ns(status.get('error_bound_ns'))}")
                return 0
            last = f"{status.get('state')}, bound {fmt_ns(status.get('error_bound_ns'))}"
            if status.get("reason"):
                last += f" ({status['reason']})"
        except ControlError as exc:
            last = str(exc)
        if deadline is not None and time.monotonic() >= deadline:
            if not args.quiet:
                print(f"tsq waitsync: not synchronised after {args.timeout:g} s: {last}", file=sys.stderr)
            return 1
        time.sleep(args.interval)
