"""`tsq config check [FILE]`: is the gateway's configuration valid? (Default /etc/tsq/tsq.toml and its
drop-ins.) Every file is parsed, every value checked as `tsq gateway` would at start (trust files,
pins, keys, modes), and the effective settings are printed. Exit 0 if valid, 2 with one line per
problem otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import Any, Dict, List

from tsq.gateway.config import DEFAULT_PATH, ConfigError, config_files, load_config
from tsq.gateway.runner import check_trust, trust_verifier
from tsq.gateway.settings import SyncConfig


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="check the gateway's configuration file",
                       description=__doc__)
    verbs = p.add_subparsers(dest="verb", metavar="check")
    c = verbs.add_parser("check", help="parse and check a configuration (default /etc/tsq/tsq.toml)")
    c.add_argument("file", nargs="?", default=None, metavar="FILE",
                   help=f"the file to check (default {DEFAULT_PATH}, with its conf.d drop-ins)")
    # `tsq gateway --config FILE` names it so; the same words here must not be an error.
    c.add_argument("--config", dest="config_file", metavar="FILE", help="the same as FILE")
    p.set_defaults(func=run)


def problems(values: Dict[str, Any]) -> List[str]:
    """What would stop the gateway at start, one line each (nothing: it would start)."""
    out: List[str] = []
    try:
        config = SyncConfig(**values)
    except TypeError as exc:  # pragma: no cover - the schema only yields known fields
        return [str(exc)]
    if not config.servers and not config.ports:
        out.append("nothing to do: give `servers` (TSQ servers) and/or [bridge] `ports`")
    if config.ports and not config.servers and config.source == "engine":
        out.append("[bridge] source = \"engine\" needs `servers` (or use source = \"system\")")
    try:
        check_trust(config)
        trust_verifier(config.verify_key, config.key_id, config.require_signature)
    except ValueError as exc:
        out.append(str(exc))
    for port in config.ports:
        if not os.path.exists(port):
            out.append(f"note: serial port {port} does not exist now (fine if it is plugged in later)")
    return out


def run(args: argparse.Namespace) -> int:
    if getattr(args, "verb", None) != "check":
        print("usage: tsq config check [FILE]", file=sys.stderr)
        return 2
    if args.file and args.config_file and args.file != args.config_file:
        print("tsq config: give the file once (FILE or --config FILE)", file=sys.stderr)
        return 2
    args.file = args.file or args.config_file or DEFAULT_PATH
    try:
        values = load_config(args.file)
    except ConfigError as exc:
        print(f"tsq config: {exc}", file=sys.stderr)
        return 2
    found = problems(values)
    errors = [p for p in found if not p.startswith("note:")]
    for p in found:
        print(f"tsq config: {p}", file=sys.stderr)
    if errors:
        return 2
    print(f"{', '.join(config_files(args.file))}: valid")
    defaults = SyncConfig()
    for f in fields(SyncConfig):
        value = values.get(f.name, getattr(defaults, f.name))
        marker = "" if f.name in values else "  (default)"
        print(f"  {f.name} = {value!r}{marker}")
    return 0
