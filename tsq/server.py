"""`python -m tsq.server ...`: the same as `tsq server ...`."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from tsq.quic import server_cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsq")
    sub = parser.add_subparsers(dest="command")
    server_cli.add_parser(sub)
    args = parser.parse_args(["server", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
