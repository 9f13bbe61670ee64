"""`tsq sync`: keep a model of UTC from TSQ servers (the gateway daemon without serial ports)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import fields
from typing import Any, Dict

from tsq.gateway.config import ConfigError, load_config
from tsq.gateway.control import ControlError, default_control_path
from tsq.gateway.runner import SyncConfig, SyncRunner

log = logging.getLogger("tsq.sync")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sync", help="keep a model of UTC from TSQ servers (the gateway daemon)",
        description="Poll TSQ servers over persistent QUIC connections, keep a model of UTC against "
        "CLOCK_MONOTONIC_RAW, log every sample, serve `tsq status`, and optionally discipline the "
        "system clock or feed chronyd. Settings come from --config FILE and/or the flags (flags win).",
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration (see examples/tsq-sync.toml)")
    p.add_argument("--server", action="append", metavar="HOST[:PORT]",
                   help="TSQ server (repeatable; default port 443); replaces the config's list")
    p.add_argument("--mode", choices=("auto", "datagram", "stream"), help="exchange mode (default auto)")
    p.add_argument("--minpoll", type=int, metavar="LOG2S", help="shortest poll, log2 s (default 0)")
    p.add_argument("--maxpoll", type=int, metavar="LOG2S", help="longest poll, log2 s (default 6)")
    p.add_argument("--log", dest="log_dir", metavar="DIR", help="field offset log directory (CSV)")
    p.add_argument("--fsync-interval", dest="fsync_interval_s", type=float, metavar="S")
    p.add_argument("--drift-file", metavar="FILE",
                   help="keep the raw clock's frequency here across restarts (like chrony's driftfile)")
    p.add_argument("--control", dest="control_path", metavar="PATH",
                   help=f"control socket (default {default_control_path()})")
    trust = p.add_argument_group("trust (default: system CAs)")
    trust.add_argument("--ca", metavar="FILE", help="trust this CA bundle (PEM) instead")
    trust.add_argument("--pin", metavar="sha256/BASE64", help="accept only this SPKI pin")
    trust.add_argument("--insecure", action="store_true", default=None,
                       help="accept any certificate (warns)")
    trust.add_argument("--verify-key", metavar="FILE",
                       help="require signed responses and verify them with this key (PEM Ed25519 "
                            "public key or 'hmac:<hex>'); unsigned or badly signed answers are discarded")
    trust.add_argument("--key-id", dest="key_id", type=int, metavar="N", help="key id of --verify-key "
                       "(default 1)")
    trust.add_argument("--require-signature", action="store_true", default=None,
                       help="same as --verify-key's default: refuse unsigned responses (needs --verify-key)")
    trust.add_argument("--allow-legacy-alpn", action="store_true", default=None,
                       help="also speak ALPN tsq/1 (the implementation deployed in the wild: streams, "
                            "TLVs 1-3, no signatures); draft §7 wants exactly 'tsq'")
    out = p.add_argument_group("outputs (all off by default)")
    out.add_argument("--adjust-system", action="store_true", default=None,
                     help="discipline the system clock with adjtimex (needs CAP_SYS_TIME)")
    out.add_argument("--makestep", type=float, metavar="S",
                     help="step instead of slewing when |offset| > S in the first updates (default 1.0)")
    out.add_argument("--makestep-limit", dest="makestep_limit", type=int, metavar="N",
                     help="updates in which a step is allowed (default 3)")
    out.add_argument("--panic", type=float, metavar="S",
                     help="never touch the clock for |offset| > S (default 1000; 0: no limit)")
    out.add_argument("--dry-run", action="store_true", default=None,
                     help="with --adjust-system: print what would be done, change nothing")
    out.add_argument("--refclock-sock", metavar="PATH", help="feed chronyd's `refclock SOCK PATH`")
    out.add_argument("--refclock-time-bits", choices=("auto", "32", "64"),
                     help="time_t width of chronyd's build (default auto)")
    out.add_argument("--metrics-file", metavar="FILE", help="write Prometheus metrics here every second")
    out.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics on 127.0.0.1:PORT")
    p.add_argument("--quiet", "-q", action="store_true", default=None, help="no status line per update")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SyncConfig:
    """SyncConfig from --config FILE overlaid with the flags given. Raises ConfigError."""
    values: Dict[str, Any] = load_config(args.config) if args.config else {}
    names = {f.name for f in fields(SyncConfig)}
    for name in names:
        if name == "servers":
            continue
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.server:
        values["servers"] = list(args.server)
    if not values.get("servers"):
        raise ConfigError("no TSQ server: give --server HOST[:PORT] or `servers` in --config FILE")
    return SyncConfig(**values)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("quic").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"tsq sync: {exc}", file=sys.stderr)
        return 2
    if config.insecure:
        print("tsq sync: WARNING: --insecure: server certificates are not checked; anyone on the path "
              "can feed this gateway a false time", file=sys.stderr)
    if config.dry_run and not config.adjust_system:
        print("tsq sync: --dry-run only applies to --adjust-system", file=sys.stderr)
    try:
        runner = SyncRunner(config)
    except (OSError, ValueError) as exc:
        print(f"tsq sync: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(runner))
    except (ControlError, OSError) as exc:   # control socket in use, log directory not writable
        print(f"tsq sync: {exc}", file=sys.stderr)
        return 1


async def _main(runner: SyncRunner) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(runner.run())
    stopping = []

    def stop(signame: str) -> None:
        stopping.append(signame)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop, sig.name)
    log.info("%d server(s), control socket %s", len(runner.config.servers), runner.control_path)
    if runner.drift_note:
        log.info("%s", runner.drift_note)
    try:
        await task
    except asyncio.CancelledError:
        if not stopping:
            raise
    log.info("stopped (%s)", stopping[0] if stopping else "done")
    return 0
