"""`tsq gateway [PORT...]`: the whole gateway in one process — time from TSQ servers over QUIC, the
system clock / chronyd / metrics outputs, and the serial devices — configured by /etc/tsq/tsq.toml
(and /etc/tsq/tsq.d/*.toml) unless --config says otherwise; flags override the file. What systemd
runs (examples/systemd/tsq-gateway.service): it says READY once synchronised, reloads on SIGHUP.
"""

from __future__ import annotations

import argparse
import os
from typing import Tuple

from tsq.bridge.links import PROFILES
from tsq.gateway import sync_cli
from tsq.gateway.config import DEFAULT_PATH


def position(text: str) -> Tuple[float, float]:
    try:
        lat_s, lon_s = text.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees, got {text!r}") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"position out of range: {text!r}")
    return lat, lon


def add_device_arguments(p: argparse.ArgumentParser, ports_help: str) -> None:
    """The serial devices' flags (shared by `tsq gateway` and `tsq bridge`)."""
    p.add_argument("ports", nargs="*", metavar="PORT", help=ports_help)
    dev = p.add_argument_group("serial devices")
    dev.add_argument("--source", choices=["engine", "system"],
                     help="the devices' time: the engine fed by --server (default), or 'system': this "
                          "host's already disciplined clock (chrony, GNSS, PTP)")
    dev.add_argument("--assume-bound", dest="assume_bound_ns", type=int, metavar="NS",
                     help="with --source system: vouch for the system clock to within NS even when the "
                          "kernel reports it unsynchronised (a clock that is itself the reference)")
    dev.add_argument("--baud", type=int, help="serial speed (default 115200)")
    dev.add_argument("--link", choices=["auto", *PROFILES],
                     help="what the serial line is, for its timing: 'auto' (default) detects it from "
                          "sysfs (the tty's driver; a pty or an unknown one: pty)")
    dev.add_argument("--nmea", action="store_true", default=None,
                     help="emit $GPZDA/$GPRMC at the top of each UTC second instead of the binary protocol")
    dev.add_argument("--nmea-position", type=position, metavar="LAT,LON",
                     help="position to put in $GPRMC (default: empty fields)")
    dev.add_argument("--ping-interval", dest="ping_interval_s", type=float, metavar="S",
                     help="seconds between ping exchanges per device (default 1)")
    dev.add_argument("--single-ping", action="store_true", default=None,
                     help="one ping per interval; by default each measured ping follows an unmeasured "
                          "warm-up ping, which removes a one-sided delay of an idle line (docs/bridge.md)")
    dev.add_argument("--reply-spin-ms", dest="reply_spin_ms", type=float, metavar="MS",
                     help="watch for each PONG without sleeping, in a window of at most MS around when "
                          "the recent ones came, so it is stamped on arrival, not a scheduler wake-up "
                          "later (costs up to MS of a core per ping; default 0: off; for a gateway with "
                          "cores to spare, docs/bridge.md)")
    dev.add_argument("--read-probe", dest="read_probe", action="store_true", default=None,
                     help="measure this host's serial read latency on a private pty (4 times a second) "
                          "and take it off the USB frame grid's phase; off by default: not yet measured "
                          "on a real adapter, and worse through this project's line models "
                          "(docs/bridge.md)")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gateway", help="the gateway in one process: engine, serial bridge and outputs",
                       description=__doc__)
    p.add_argument("--config", metavar="FILE",
                   help=f"TOML configuration (default {DEFAULT_PATH} when it exists; examples/tsq.toml)")
    add_device_arguments(p, "serial port(s) to serve, e.g. /dev/ttyUSB0 (added to [bridge] ports)")
    sync_cli.add_engine_arguments(p)
    p.set_defaults(func=run, cli_name="tsq gateway")


def run(args: argparse.Namespace) -> int:
    if args.config is None and os.path.exists(DEFAULT_PATH):
        args.config = DEFAULT_PATH
    return sync_cli.run(args, require_servers=False)
