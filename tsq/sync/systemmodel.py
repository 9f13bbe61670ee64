"""SystemClockModel: a TimeModel backed by the local system clock (`tsq bridge --source system`).

For gateways whose CLOCK_REALTIME is already disciplined (chrony, GNSS, PTP). UTC at a raw instant
is read through a fresh (realtime, raw) correlation plus the realtime-vs-raw rate measured over the
last few seconds; the error bound is the kernel's `maxerror` from a read-only `adjtimex` query
(modes = 0: this module never changes the clock). When the kernel says the clock is unsynchronised
the model is "unsynchronised" and answers None, unless the operator vouches for the clock with
`assume_bound_ns` (useful on a test machine whose clock IS the reference).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Optional

from tsq.outputs.sysclock import Timex

STA_UNSYNC = 0x0040
TIME_ERROR = 5
_CLOCK_RAW = time.CLOCK_MONOTONIC_RAW
_CLOCK_REALTIME = time.CLOCK_REALTIME


@dataclass(frozen=True)
class KernelClockStatus:
    """What a read-only adjtimex says about the system clock."""

    synchronised: bool
    maxerror_ns: int
    esterror_ns: int
    tai_offset_s: int
    status: int


_ADJTIMEX: list[Any] = []   # [function] once looked up ([None] where absent): the lookup is slow


def _adjtimex() -> Any:
    if not _ADJTIMEX:
        name = ctypes.util.find_library("c")
        fn = None
        if name is not None:
            try:
                fn = ctypes.CDLL(name, use_errno=True).adjtimex
            except (OSError, AttributeError):
                fn = None
        _ADJTIMEX.append(fn)
    return _ADJTIMEX[0]


def read_kernel_status() -> Optional[KernelClockStatus]:
    """adjtimex with modes=0 (a pure read). None where adjtimex is unavailable."""
    fn = _adjtimex()
    if fn is None:
        return None
    tx = Timex()
    tx.modes = 0  # read only: never set any mode bit here
    ret = fn(ctypes.byref(tx))
    if ret < 0:
        return None
    synced = ret != TIME_ERROR and not (tx.status & STA_UNSYNC)
    return KernelClockStatus(synced, tx.maxerror * 1000, tx.esterror * 1000, tx.tai, tx.status)


def leap_from_status(status: int) -> int:
    """TimeModel.leap() code from the kernel's STA_INS/STA_DEL bits."""
    if status & 0x0010:
        return 1
    if status & 0x0020:
        return 2
    return 0


@dataclass(frozen=True)
class _Corr:
    raw_ns: int
    offset_ns: int     # realtime - raw at raw_ns
    width_ns: int


def _correlate(tries: int = 3) -> _Corr:
    """Narrowest of `tries` raw/realtime/raw brackets."""
    best: Optional[_Corr] = None
    for _ in range(tries):
        a = time.clock_gettime_ns(_CLOCK_RAW)
        rt = time.clock_gettime_ns(_CLOCK_REALTIME)
        b = time.clock_gettime_ns(_CLOCK_RAW)
        mid = (a + b) // 2
        c = _Corr(mid, rt - mid, b - a)
        if best is None or c.width_ns < best.width_ns:
            best = c
    assert best is not None
    return best


class SystemClockModel:
    """TimeModel: UTC from CLOCK_REALTIME, bound from the kernel's maxerror (read-only)."""

    def __init__(
        self,
        assume_bound_ns: Optional[int] = None,
        refresh_ns: int = 100_000_000,
        rate_span_ns: int = 4_000_000_000,
        status_refresh_ns: int = 1_000_000_000,
    ) -> None:
        self.assume_bound_ns = assume_bound_ns
        self.refresh_ns = refresh_ns
        self.rate_span_ns = rate_span_ns
        self.status_refresh_ns = status_refresh_ns
        self._history: Deque[_Corr] = deque(maxlen=64)
        self._status: Optional[KernelClockStatus] = None
        self._status_raw = 0
        self._refresh(force=True)

    # -- internals -------------------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> _Corr:
        now = time.clock_gettime_ns(_CLOCK_RAW)
        if force or not self._history or now - self._history[-1].raw_ns > self.refresh_ns:
            self._history.append(_correlate())
        if force or now - self._status_raw > self.status_refresh_ns:
            self._status = read_kernel_status()
            self._status_raw = now
        return self._history[-1]

    def rate(self) -> float:
        """d(realtime)/d(raw) measured over the correlation history (1.0 until it spans 1 s)."""
        last = self._history[-1]
        for c in self._history:
            span = last.raw_ns - c.raw_ns
            if span <= self.rate_span_ns:
                if span >= 1_000_000_000:
                    return 1.0 + (last.offset_ns - c.offset_ns) / span
                break
        return 1.0

    def kernel_status(self) -> Optional[KernelClockStatus]:
        self._refresh()
        return self._status

    def _trusted(self) -> bool:
        st = self._status
        return self.assume_bound_ns is not None or (st is not None and st.synchronised)

    # -- TimeModel ---------------------------------------------------------------------------------
    def utc_ns(self, raw_ns: int) -> Optional[int]:
        corr = self._refresh()
        if not self._trusted():
            return None
        return raw_ns + corr.offset_ns + round((raw_ns - corr.raw_ns) * (self.rate() - 1.0))

    def error_bound_ns(self, raw_ns: int) -> Optional[int]:
        corr = self._refresh()
        if not self._trusted():
            return None
        st = self._status
        kernel = st.maxerror_ns if st is not None and st.synchronised else None
        base = kernel if kernel is not None else (self.assume_bound_ns or 0)
        # The kernel's maxerror grows by 500 ppm per second in its own right; add the same for the
        # distance of raw_ns from our correlation, plus the correlation's own width.
        return base + corr.width_ns + abs(raw_ns - corr.raw_ns) // 2000

    def state(self, raw_ns: int) -> str:
        self._refresh()
        return "synchronised" if self._trusted() else "unsynchronised"

    def leap(self) -> int:
        self._refresh()
        return leap_from_status(self._status.status) if self._status is not None else 3
