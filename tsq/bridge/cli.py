"""`tsq bridge PORT... --server HOST[:PORT]...` (also `python -m tsq.bridge`): serial time bridge.

The time comes either from the sync engine run in this process (`--server`, repeatable: the same
SyncRunner as `tsq sync`) or from the local system clock as already disciplined (`--source system`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any, Optional, Sequence, Tuple

from tsq.bridge.links import PROFILES
from tsq.bridge.service import Bridge, BridgeConfig, model_status
from tsq.gateway.control import ControlServer, default_control_path
from tsq.tasks import cancel_and_wait

NO_SOURCE_ERROR = (
    "tsq bridge: no time source: give --server HOST[:PORT] (repeatable) to run the sync engine here, "
    "or --source system to use this machine's already disciplined clock "
    "(or run `tsq demo` for a self-contained demonstration)"
)


def _position(text: str) -> Tuple[float, float]:
    try:
        lat_s, lon_s = text.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees, got {text!r}") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"position out of range: {text!r}")
    return lat, lon


def configure(p: argparse.ArgumentParser) -> None:
    """Add the bridge's arguments to a parser (shared by `tsq bridge` and `python -m tsq.bridge`)."""
    p.add_argument("ports", nargs="*", metavar="PORT",
                   help="serial port(s), e.g. /dev/ttyUSB0; with none (and no --server/--source), "
                        "runs the local demo (`tsq demo`)")
    p.add_argument("--server", action="append", default=[], metavar="HOST[:PORT]",
                   help="TSQ server to synchronise from (repeatable); runs the sync engine in-process")
    p.add_argument("--source", choices=["system"],
                   help="'system': use the local clock as already disciplined (chrony, GNSS) instead")
    p.add_argument("--assume-bound", type=int, metavar="NS", default=None,
                   help="with --source system: vouch for the system clock to within NS even when the "
                        "kernel reports it unsynchronised (e.g. a clock that is itself the reference)")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    p.add_argument("--link", choices=["auto", *PROFILES], default="auto",
                   help="what the serial line is, for its timing: 'auto' (default) detects it from "
                        "sysfs (the tty's driver; a pty or an unknown one: pty)")
    p.add_argument("--nmea", action="store_true",
                   help="emit $GPZDA/$GPRMC at the top of each UTC second instead of the binary protocol")
    p.add_argument("--nmea-position", type=_position, metavar="LAT,LON",
                   help="position to put in $GPRMC (default: empty fields)")
    p.add_argument("--ping-interval", type=float, default=1.0, metavar="S",
                   help="seconds between ping exchanges per device (default 1)")
    p.add_argument("--single-ping", action="store_true",
                   help="one ping per interval; by default each measured ping follows an unmeasured "
                        "warm-up ping by 2 ms, which removes a one-sided delay of an idle line "
                        "(docs/bridge.md)")
    p.add_argument("--backoff-max", type=float, default=5.0, metavar="S",
                   help="longest wait between attempts to reopen a vanished port (default 5)")
    p.add_argument("--backoff-initial", type=float, default=0.1, metavar="S",
                   help="first wait before reopening a vanished port (default 0.1)")
    p.add_argument("--log", metavar="DIR", help="write the per-device field log here")
    p.add_argument("--fsync-interval", type=float, default=5.0, metavar="S")
    p.add_argument("--control", metavar="PATH", help="control socket for `tsq status`")
    p.add_argument("--ca", help="CA file to verify the servers' certificates")
    p.add_argument("--pin", help="pin the server certificate (as `tsq sync --pin`)")
    p.add_argument("--insecure", action="store_true", help="do not verify server certificates")
    p.add_argument("--status-interval", type=float, default=0.0, metavar="S",
                   help="print a status line per device every S seconds (0: quiet)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bridge", help="hand the gateway's UTC to serial devices",
                       description=__doc__)
    configure(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.ports:
        if args.server or args.source is not None:
            print("tsq bridge: no serial port given (e.g. /dev/ttyUSB0)", file=sys.stderr)
            return 2
        from tsq import demo

        print("tsq bridge: no serial port and no server given: running the local demo (a TSQ server "
              "on loopback, the engine, this bridge and simulated devices). For real use: "
              "python -m tsq.bridge /dev/ttyUSB0 --server HOST[:PORT]", file=sys.stderr)
        return demo.run(demo.default_args())
    if not args.server and args.source is None:
        print(NO_SOURCE_ERROR, file=sys.stderr)
        return 2
    if args.server and args.source is not None:
        print("tsq bridge: --server and --source are exclusive", file=sys.stderr)
        return 2
    config = BridgeConfig(
        ports=list(args.ports), baud=args.baud, nmea=args.nmea, nmea_position=args.nmea_position,
        ping_interval_s=args.ping_interval, warmup_ping=not args.single_ping,
        backoff_initial_s=args.backoff_initial,
        backoff_max_s=args.backoff_max, log_dir=args.log, fsync_interval_s=args.fsync_interval,
        link=args.link, source=(f"the engine ({', '.join(args.server)})" if args.server
                                else "this host's clock"),
    )
    # The start line and the device events (tsq.bridge) go to stderr, as the gateway's log does.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(_main(args, config))
    except KeyboardInterrupt:
        return 0


async def _main(args: argparse.Namespace, config: BridgeConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = []
    if args.server:
        from tsq.gateway.runner import SyncConfig, SyncRunner

        runner = SyncRunner(SyncConfig(
            servers=list(args.server), ca=args.ca, pin=args.pin, insecure=args.insecure,
            log_dir=args.log, fsync_interval_s=args.fsync_interval, control_path=args.control,
        ))
        bridge = Bridge(config, runner.model)
        runner.add_status_provider("devices", bridge.status)
        tasks.append(asyncio.create_task(runner.run()))
    else:
        from tsq.gateway.systemmodel import SystemClockModel

        model = SystemClockModel(assume_bound_ns=args.assume_bound)
        bridge = Bridge(config, model)

        def full_status() -> dict[str, Any]:
            return {**model_status(model), "devices": bridge.status()}

        control = args.control or default_control_path()
        tasks.append(asyncio.create_task(ControlServer(control, full_status).serve_forever()))
    tasks.append(asyncio.create_task(bridge.run()))
    if args.status_interval > 0:
        tasks.append(asyncio.create_task(_print_status(bridge, args.status_interval)))
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    for t in done:
        if t is not waiter and not t.cancelled() and t.exception() is not None:
            print(f"tsq bridge: {t.exception()!r}", file=sys.stderr)
            status = 1
    await cancel_and_wait([*tasks, waiter])
    return status


async def _print_status(bridge: Bridge, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for d in bridge.status():
            print(" ".join(f"{k}={v}" for k, v in d.items()), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m tsq.bridge`: the same arguments as `tsq bridge`."""
    parser = argparse.ArgumentParser(prog="python -m tsq.bridge", description=__doc__)
    configure(parser)
    args = parser.parse_args(argv)
    return run(args)
