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


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered, or only the one named `only`.

    Registering a subcommand imports its module, and with it what the subcommand runs: the demo,
    the report and the server would cost a gateway several megabytes it never uses (issue 15).
    """
    parser = argparse.ArgumentParser(
        prog="tsq",
        description="Time Synchronization over QUIC: serve, query and keep UTC on a field gateway, "
        "hand it to serial devices, and prove afterwards how good it was.",
    )
    parser.add_argument("--version", action="version", version=f"tsq {__version__} ({_backend()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS:
        if only is None or name == only:
            importlib.import_module(module).add_parser(sub)
    return parser


def _command_named(argv: Sequence[str]) -> Optional[str]:
    """The subcommand `argv` runs, if it names a known one first; None for `--help`, `--version`..."""
    names = {name for name, _ in COMMANDS}
    return argv[0] if argv and argv[0] in names else None


def _backend() -> str:
    from tsq import clock

    return f"clock backend: {clock.BACKEND}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the `tsq` command line; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_named(args_list))
    args = parser.parse_args(args_list)
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
