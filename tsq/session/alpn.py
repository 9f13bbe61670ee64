"""ALPN identifiers (draft §6.1, §7): `tsq`, and the `tsq/1` of the implementation deployed in the wild.

Draft §7 requires exactly "tsq". `tsq/1` (streams only, TLVs 1-3, no FIN) is spoken only where the
user opts in (`tsq server --legacy-alpn`, clients' `--allow-legacy-alpn`), and is always reported
(server stats, `tsq query`, `tsq status`). docs/wire.md "ALPN".
"""

from __future__ import annotations

from typing import List

ALPN_TSQ = "tsq"
ALPN_LEGACY = "tsq/1"


def offered(legacy: bool) -> List[str]:
    """The ALPN list to offer or accept, `tsq` first."""
    return [ALPN_TSQ, ALPN_LEGACY] if legacy else [ALPN_TSQ]
