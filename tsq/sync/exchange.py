"""One four-timestamp exchange, and the draft §6.2/§6.6 arithmetic on it (sans-IO)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SampleRejected(ValueError):
    """An exchange failed a draft §6.6 sanity check; the message says which."""


@dataclass(frozen=True)
class Exchange:
    """A completed request/response: client stamps in raw ns, server stamps in unix ns."""

    server: str
    mode: str
    t1_raw: int
    t2_unix: int
    t3_unix: int
    t4_raw: int
    kernel_t1: bool = False
    kernel_t4: bool = False
    clock_quality: Any = None
    time_source: Any = None
    metadata: tuple[tuple[str, str], ...] = field(default=())

    @property
    def offset_ns(self) -> int:
        """Offset of UTC from the raw clock measured by this exchange."""
        return offset_delay(self.t1_raw, self.t2_unix, self.t3_unix, self.t4_raw)[0]

    @property
    def delay_ns(self) -> int:
        """Round-trip delay excluding the server's turnaround."""
        return offset_delay(self.t1_raw, self.t2_unix, self.t3_unix, self.t4_raw)[1]


def offset_delay(t1: int, t2: int, t3: int, t4: int) -> tuple[int, int]:
    """Draft §6.2: offset ((T2-T1)+(T3-T4))/2 and RTT (T4-T1)-(T3-T2), in integer ns.

    The halving floors; the half nanosecond this drops is far below any stamp's resolution.
    """
    return ((t2 - t1) + (t3 - t4)) // 2, (t4 - t1) - (t3 - t2)


def check(ex: Exchange, raw_to_unix_ns: int, max_offset_ns: int = 86_400 * 10**9) -> None:
    """Raise SampleRejected for the anomalies draft §6.6 lists.

    `raw_to_unix_ns` is the caller's current estimate of UTC - raw (from the system clock when
    nothing better exists); the offset threshold is applied to the difference from it.
    """
    if ex.t4_raw < ex.t1_raw:
        raise SampleRejected("T4 earlier than T1")
    if ex.t3_unix < ex.t2_unix:
        raise SampleRejected("T3 earlier than T2")
    offset, delay = offset_delay(ex.t1_raw, ex.t2_unix, ex.t3_unix, ex.t4_raw)
    if delay <= 0:
        raise SampleRejected(f"non-positive round-trip time {delay} ns")
    if abs(offset - raw_to_unix_ns) > max_offset_ns:
        raise SampleRejected(f"offset {(offset - raw_to_unix_ns) / 1e9:+.3f} s beyond threshold")
