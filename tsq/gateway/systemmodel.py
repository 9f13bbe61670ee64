"""SystemClockModel: a TimeModel backed by the local system clock (`tsq bridge --source system`).

For gateways whose CLOCK_REALTIME is already disciplined (chrony, GNSS, PTP). UTC at a raw instant
is read through a fresh (realtime, raw) correlation plus the realtime-vs-raw rate measured over the
last few seconds; the error bound is the kernel's `maxerror` from a read-only `adjtimex` query
(modes = 0: this module never changes the clock). When the kernel says the clock is unsynchronised
the model is "unsynchronised" and answers None, unless the operator vouches for the clock with
`assume_bound_ns` (useful on a test machine whose clock IS the reference). `clock_id`/`add_ns`
serve another clock plus a constant instead (tests: CLOCK_MONOTONIC, steady where a VM's wall clock
is stepped; the same stand-in as `tsq server --clock monotonic`).
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional

from tsq import clock
from tsq.clock import Correlation, KernelClockStatus, read_kernel_status

__all__ = ["KernelClockStatus", "SystemClockModel", "read_kernel_status"]


class SystemClockModel:
    """TimeModel: UTC from CLOCK_REALTIME (or `clock_id` + `add_ns`), bound from the kernel's
    maxerror (read-only)."""

    def __init__(
        self,
        assume_bound_ns: Optional[int] = None,
        refresh_ns: int = 100_000_000,
        rate_span_ns: int = 4_000_000_000,
        status_refresh_ns: int = 1_000_000_000,
        clock_id: int = clock.CLOCK_REALTIME,
        add_ns: int = 0,
    ) -> None:
        self.assume_bound_ns = assume_bound_ns
        self.clock_id = clock_id
        self.add_ns = add_ns
        self.refresh_ns = refresh_ns
        self.rate_span_ns = rate_span_ns
        self.status_refresh_ns = status_refresh_ns
        self._history: Deque[Correlation] = deque(maxlen=64)
        self._status: Optional[KernelClockStatus] = None
        self._status_raw = 0
        self._refresh(force=True)

    # -- internals -------------------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> Correlation:
        now = clock.raw_ns()
        if force or not self._history or now - self._history[-1].ref_ns > self.refresh_ns:
            self._history.append(clock.correlate(clock.CLOCK_MONOTONIC_RAW, self.clock_id, tries=3))
        if force or now - self._status_raw > self.status_refresh_ns:
            self._status = read_kernel_status()
            self._status_raw = now
        return self._history[-1]

    def rate(self) -> float:
        """d(clock)/d(raw) measured over the correlation history (1.0 until it spans 1 s)."""
        last = self._history[-1]
        for c in self._history:
            span = last.ref_ns - c.ref_ns
            if span <= self.rate_span_ns:
                if span >= 1_000_000_000:
                    return 1.0 + (_offset(last) - _offset(c)) / span
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
        return raw_ns + _offset(corr) + self.add_ns + round((raw_ns - corr.ref_ns) * (self.rate() - 1.0))

    def error_bound_ns(self, raw_ns: int) -> Optional[int]:
        corr = self._refresh()
        if not self._trusted():
            return None
        st = self._status
        kernel = st.maxerror_ns if st is not None and st.synchronised else None
        base = kernel if kernel is not None else (self.assume_bound_ns or 0)
        # The kernel's maxerror grows by 500 ppm per second in its own right; add the same for the
        # distance of raw_ns from our correlation, plus the correlation's own width.
        return base + corr.width_ns + abs(raw_ns - corr.ref_ns) // 2000

    def state(self, raw_ns: int) -> str:
        self._refresh()
        return "synchronised" if self._trusted() else "unsynchronised"

    def leap(self) -> int:
        self._refresh()
        return self._status.leap if self._status is not None else 3


def _offset(corr: Correlation) -> int:
    """clock - raw at the correlation's instant."""
    return corr.sys_ns - corr.ref_ns
