"""UTC time as text: the one formatter for logs, status and reports."""

from __future__ import annotations

import datetime
from typing import Optional, overload

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


@overload
def utc_iso(unix_ns: int) -> str: ...
@overload
def utc_iso(unix_ns: None) -> None: ...
def utc_iso(unix_ns: Optional[int]) -> Optional[str]:
    """RFC 3339 UTC with nanoseconds, e.g. 2026-11-24T19:00:00.123456789Z (None stays None)."""
    if unix_ns is None:
        return None
    secs, frac = divmod(unix_ns, 1_000_000_000)
    t = _EPOCH + datetime.timedelta(seconds=secs)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
