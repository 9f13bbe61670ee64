"""The time model (sans-IO): UTC as a function of CLOCK_MONOTONIC_RAW, with an error bound.

    utc_ns(raw)         = raw + offset_ref + freq * (raw - raw_ref)
    error_bound_ns(raw) = bound_ref + (k * freq_se + max_clock_error) * |raw - raw_ref|

`raw_ref` is the instant of the last successful selection. The bound grows linearly from it at the
*holdover growth rate*: three standard errors of the frequency estimate plus `max_clock_error_ppb`
(default 1000 ppb = 1 ppm, chrony's `maxclockerror`), the allowance for the oscillator wandering
away from the measured frequency. A Raspberry Pi's crystal moves by roughly 0.03-0.1 ppm per degree
Celsius away from its turnover point, so 1 ppm covers a 10-30 degree swing; change it for a better or
a worse oscillator.

States (a function of the query instant, like the bound):
  unsynchronised  no model yet, or the bound has grown more than `max_holdover_growth_ns` past its
                  value at the last update, or past `max_bound_ns` (utc_ns returns None)
  synchronised    the last selection round confirmed the model (the engine calls `update`) and it
                  was within `holdover_after_ns` (a backstop: the engine marks holdover sooner)
  holdover        otherwise: the engine called `mark_undecided` (sources silent, too few of them,
                  or no agreement) or the backstop expired; the model still answers, its bound growing

The holdover limit is relative to the bound at the last update so that it scales with the path: a
geostationary link's model starts with a bound of hundreds of ms and may still hold over for as
long as a LAN's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

NS_PER_S = 1_000_000_000

UNSYNCHRONISED = "unsynchronised"
SYNCHRONISED = "synchronised"
HOLDOVER = "holdover"

LEAP_NONE, LEAP_INSERT, LEAP_DELETE, LEAP_UNKNOWN = 0, 1, 2, 3


@dataclass(frozen=True)
class ModelConfig:
    max_clock_error_ppb: float = 1000.0     # holdover wander allowance (see module docstring)
    k_sigma: float = 3.0                    # frequency standard errors in the growth rate
    max_bound_ns: int = 3 * NS_PER_S        # absolute cap (chrony's maxdistance)
    max_holdover_growth_ns: int = 100_000_000   # 100 ms past the last update: ~28 h at 1 ppm
    holdover_after_ns: int = 384 * NS_PER_S  # backstop: 6 x 2**maxpoll at the default maxpoll 6


class TimeModel(Protocol):
    """What every consumer of time (bridge, outputs, status) sees: the engine's ClockModel, or the
    gateway's SystemClockModel. Defined once, here (docs/internals.md)."""

    def utc_ns(self, raw_ns: int) -> Optional[int]: ...            # None while unsynchronised
    def error_bound_ns(self, raw_ns: int) -> Optional[int]: ...    # grows in holdover
    def state(self, raw_ns: int) -> str: ...                       # unsynchronised|synchronised|holdover
    def leap(self) -> int: ...                                     # 0 none, 1 insert, 2 delete, 3 unknown


class ClockModel:
    """The live model; implements the TimeModel protocol of docs/internals.md."""

    def __init__(self, config: Optional[ModelConfig] = None) -> None:
        self.config = config or ModelConfig()
        self.raw_ref: Optional[int] = None
        self.offset_ref: int = 0            # UTC - raw at raw_ref
        self.freq_ppb: float = 0.0          # d(offset)/d(raw)
        self.freq_se_ppb: float = 0.0
        self.bound_ref_ns: float = 0.0
        self.undecided_since: Optional[int] = None   # raw ns of a failed selection after the last success
        self.reason: str = "no samples yet"
        self.updates = 0
        self._leap = LEAP_NONE

    # ------------------------------------------------------------------------------ updating
    def update(self, raw_ns: int, offset_ns: int, freq_ppb: float, freq_se_ppb: float,
               bound_ns: float, leap: int = LEAP_NONE, reason: str = "") -> None:
        """A successful selection at raw_ns: the combined offset, frequency and bound."""
        self.raw_ref = raw_ns
        self.offset_ref = offset_ns
        self.freq_ppb = freq_ppb
        self.freq_se_ppb = freq_se_ppb
        self.bound_ref_ns = bound_ns
        self.undecided_since = None
        self.reason = reason
        self.updates += 1
        self._leap = leap

    def mark_undecided(self, raw_ns: int, reason: str) -> None:
        """A selection failed: stop claiming synchronisation (holdover if a model exists)."""
        if self.undecided_since is None:
            self.undecided_since = raw_ns
        self.reason = reason

    # ------------------------------------------------------------------------------ queries
    @property
    def growth_ppb(self) -> float:
        """The rate at which the bound grows away from the last update (the holdover rate)."""
        return self.config.k_sigma * self.freq_se_ppb + self.config.max_clock_error_ppb

    @property
    def freq_ppm(self) -> float:
        return self.freq_ppb / 1000.0

    @property
    def freq_error_ppm(self) -> float:
        return self.freq_se_ppb / 1000.0

    def offset_ns(self, raw_ns: int) -> Optional[int]:
        """UTC - raw at raw_ns (regardless of state), None before the first update."""
        if self.raw_ref is None:
            return None
        return self.offset_ref + round(self.freq_ppb * (raw_ns - self.raw_ref) / NS_PER_S)

    def _bound(self, raw_ns: int) -> Optional[float]:
        if self.raw_ref is None:
            return None
        return self.bound_ref_ns + self.growth_ppb * abs(raw_ns - self.raw_ref) / NS_PER_S

    def expired(self, raw_ns: int) -> bool:
        """The holdover has run out (or there never was a model): utc_ns answers None."""
        bound = self._bound(raw_ns)
        if bound is None:
            return True
        return (bound > self.config.max_bound_ns
                or bound - self.bound_ref_ns > self.config.max_holdover_growth_ns)

    def state(self, raw_ns: int) -> str:
        if self.expired(raw_ns):
            return UNSYNCHRONISED
        assert self.raw_ref is not None          # expired() is True without a model
        if self.undecided_since is not None or raw_ns - self.raw_ref > self.config.holdover_after_ns:
            return HOLDOVER
        return SYNCHRONISED

    def is_synchronised(self, raw_ns: int) -> bool:
        """What an output asks before it claims sync (chronyd SOCK, adjtimex, TIMESCALE flag)."""
        return self.state(raw_ns) == SYNCHRONISED

    def interval_ns(self, raw_ns: int) -> Optional[tuple[int, int]]:
        """[lo, hi] of UTC - raw that the model vouches for at raw_ns (None when unsynchronised)."""
        offset, bound = self.offset_ns(raw_ns), self.error_bound_ns(raw_ns)
        if offset is None or bound is None:
            return None
        return offset - bound, offset + bound

    def utc_ns(self, raw_ns: int) -> Optional[int]:
        if self.state(raw_ns) == UNSYNCHRONISED:
            return None
        offset = self.offset_ns(raw_ns)
        return None if offset is None else raw_ns + offset

    def error_bound_ns(self, raw_ns: int) -> Optional[int]:
        if self.state(raw_ns) == UNSYNCHRONISED:
            return None
        bound = self._bound(raw_ns)
        return None if bound is None else int(bound) + 1   # round up: a bound, not an estimate

    def leap(self) -> int:
        return self._leap
