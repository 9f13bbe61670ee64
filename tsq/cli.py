"""The `tsq` command: one entry point, one subcommand per module.

Each subcommand lives in its own module exposing `add_parser(subparsers)`, which registers the
subparser and sets `func` (a callable taking the parsed namespace and returning an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Optional, Sequence

from tsq import __version__

# (subcommand, module). Each module's `add_parser(subparsers)` registers its subcommand.
COMMANDS: list[tuple[str, str]] = [
    ("server", "tsq.quic.server_cli"),
    ("query", "tsq.quic.query"),
    ("gateway", "tsq.gateway.gateway_cli"),
    ("sync", "tsq.gateway.sync_cli"),
    ("status", "tsq.gateway.status_cli"),
    ("waitsync", "tsq.gateway.waitsync_cli"),
    ("config", "tsq.gateway.config_cli"),
    ("pin", "tsq.quic.pin_cli"),
    ("bridge", "tsq.bridge.cli"),
    ("report", "tsq.report"),
    ("demo", "tsq.demo"),
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tsq",
        description="Time Synchronization over QUIC: serve, query and keep UTC on a field gateway, "
        "hand it to serial devices, and prove afterwards how good it was.",
    )
    parser.add_argument("--version", action="version", version=f"tsq {__version__} ({_backend()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module in COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def _backend() -> str:
    from tsq import clock

    return f"clock backend: {clock.BACKEND}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the `tsq` command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Optional[Callable[[argparse.Namespace], int]] = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
