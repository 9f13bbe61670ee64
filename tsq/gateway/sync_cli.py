"""`tsq sync`: keep a model of UTC from TSQ servers (the gateway daemon without serial ports)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import fields
from typing import Any, Dict

from tsq.gateway.app import Gateway, serve
from tsq.gateway.config import ConfigError, load_config
from tsq.gateway.control import ControlError, default_control_path
from tsq.gateway.settings import SyncConfig


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sync", help="keep a model of UTC from TSQ servers (the gateway without serial ports)",
        description="Poll TSQ servers over persistent QUIC connections, keep a model of UTC against "
        "CLOCK_MONOTONIC_RAW, log every sample, serve `tsq status`, and optionally discipline the "
        "system clock or feed chronyd. Settings come from --config FILE and/or the flags (flags win). "
        "`tsq gateway` is the same with serial devices and /etc/tsq/tsq.toml read by default.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration (see examples/tsq.toml)")
    add_engine_arguments(p)
    p.set_defaults(func=run, cli_name="tsq sync")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the engine and its outputs (shared by `tsq sync`, `tsq gateway`, the bridge)."""
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


def flag_values(args: argparse.Namespace) -> Dict[str, Any]:
    """The SyncConfig fields the flags set (None means "not given": the file or default stands)."""
    values: Dict[str, Any] = {}
    for f in fields(SyncConfig):
        if f.name in ("servers", "ports"):
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    if getattr(args, "server", None):
        values["servers"] = list(args.server)
    if getattr(args, "ports", None):
        values["ports"] = list(args.ports)
    return values


def config_from_args(args: argparse.Namespace, require_servers: bool = True) -> SyncConfig:
    """SyncConfig from --config FILE overlaid with the flags given. Raises ConfigError."""
    values: Dict[str, Any] = load_config(args.config) if getattr(args, "config", None) else {}
    values.update(flag_values(args))
    if require_servers and not values.get("servers"):
        raise ConfigError("no TSQ server: give --server HOST[:PORT] or `servers` in --config FILE")
    try:
        return SyncConfig(**values)
    except TypeError as exc:  # pragma: no cover - the schema and the flags only carry known fields
        raise ConfigError(str(exc)) from None


def run(args: argparse.Namespace, require_servers: bool = True) -> int:
    """Start a gateway from parsed flags (`tsq sync`, `tsq gateway`, the bridge): exit 0 when
    stopped by a signal, 1 when it failed while running, 2 for a bad configuration."""
    name = getattr(args, "cli_name", "tsq")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("quic").setLevel(logging.WARNING)
    try:
        config = config_from_args(args, require_servers)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    if config.insecure:
        print(f"{name}: WARNING: --insecure: server certificates are not checked; anyone on the path "
              "can feed this gateway a false time", file=sys.stderr)
    if config.dry_run and not config.adjust_system:
        print(f"{name}: --dry-run only applies to --adjust-system", file=sys.stderr)
    try:
        gateway = Gateway(config, getattr(args, "config", None), flag_values(args))
    except (OSError, ValueError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(gateway))
    except (ControlError, OSError) as exc:   # the control socket is in use or may not be trusted
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
