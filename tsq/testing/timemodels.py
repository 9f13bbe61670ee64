"""Time models with a known answer, for sans-IO tests of what consumes a `TimeModel` (the bridge)."""

from __future__ import annotations

from typing import Optional

NS_PER_S = 1_000_000_000


class FixedModel:
    """A TimeModel with UTC = raw + `offset_ns`, synchronised, a fixed bound (1 s, 1 µs by default)."""

    def __init__(self, offset_ns: int = NS_PER_S, bound_ns: int = 1_000) -> None:
        self.offset_ns = offset_ns
        self.bound_ns = bound_ns

    def utc_ns(self, raw_ns: int) -> Optional[int]:
        return raw_ns + self.offset_ns

    def error_bound_ns(self, raw_ns: int) -> Optional[int]:
        return self.bound_ns

    def state(self, raw_ns: int) -> str:
        return "synchronised"

    def leap(self) -> int:
        return 0
