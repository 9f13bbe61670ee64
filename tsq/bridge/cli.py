"""`tsq bridge PORT... --server HOST[:PORT]...` (also `python -m tsq.bridge`): serial time bridge.

The gateway (`tsq gateway`) with serial ports, started from flags: the same process, the same flags
(engine, trust, outputs, devices), the same TOML format with `--config FILE` — which, unlike for
`tsq gateway`, is not read from /etc/tsq/tsq.toml by default, so a bridge started by hand never
picks up the service's servers. The devices' time comes from the engine fed by `--server`
(repeatable), or with `--source system` from this machine's clock as already disciplined (chrony,
GNSS). With no port, no server and no source it runs the local demo (`tsq demo`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from tsq.gateway import sync_cli
from tsq.gateway.gateway_cli import add_device_arguments

NO_SOURCE_ERROR = (
    "tsq bridge: no time source: give --server HOST[:PORT] (repeatable) to run the sync engine here, "
    "or --source system to use this machine's already disciplined clock "
    "(or run `tsq demo` for a self-contained demonstration)"
)


def configure(p: argparse.ArgumentParser) -> None:
    """Add the bridge's arguments to a parser (shared by `tsq bridge` and `python -m tsq.bridge`)."""
    p.add_argument("--config", metavar="FILE",
                   help="TOML configuration in the gateway's format (examples/tsq.toml); flags override it")
    add_device_arguments(p, "serial port(s), e.g. /dev/ttyUSB0; with none (and no --server/--source), "
                            "runs the local demo (`tsq demo`)")
    sync_cli.add_engine_arguments(p)
    p.set_defaults(cli_name="tsq bridge")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bridge", help="hand the gateway's UTC to serial devices", description=__doc__)
    configure(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.ports and not args.config:
        if args.server or args.source is not None:
            print("tsq bridge: no serial port given (e.g. /dev/ttyUSB0)", file=sys.stderr)
            return 2
        from tsq import demo

        print("tsq bridge: no serial port and no server given: running the local demo (a TSQ server "
              "on loopback, the engine, this bridge and simulated devices). For real use: "
              "python -m tsq.bridge /dev/ttyUSB0 --server HOST[:PORT]", file=sys.stderr)
        return demo.run(demo.default_args())
    if not args.server and args.source is None and not args.config:
        print(NO_SOURCE_ERROR, file=sys.stderr)
        return 2
    return sync_cli.run(args, require_servers=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m tsq.bridge`: the same arguments as `tsq bridge`."""
    parser = argparse.ArgumentParser(prog="python -m tsq.bridge", description=__doc__)
    configure(parser)
    args = parser.parse_args(argv)
    return run(args)
