"""SystemClockModel against the real system clock (read-only: nothing here writes the clock)."""

from __future__ import annotations

import time

from tsq.gateway.systemmodel import SystemClockModel, read_kernel_status


def test_kernel_status_reads() -> None:
    st = read_kernel_status()
    assert st is not None and st.maxerror_ns >= 0


def test_utc_matches_realtime() -> None:
    model = SystemClockModel(assume_bound_ns=1_000_000)
    assert model.state(0) == "synchronised"
    for _ in range(20):
        a = time.clock_gettime_ns(time.CLOCK_REALTIME)
        raw = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        b = time.clock_gettime_ns(time.CLOCK_REALTIME)
        utc = model.utc_ns(raw)
        assert utc is not None
        assert a - 200_000 <= utc <= b + 200_000
    bound = model.error_bound_ns(raw)
    assert bound is not None and bound >= 1_000_000
    assert model.leap() in (0, 1, 2, 3)


def test_unsynchronised_kernel_means_no_time_unless_vouched() -> None:
    st = read_kernel_status()
    assert st is not None
    model = SystemClockModel()
    if st.synchronised:
        assert model.utc_ns(0) is not None and model.state(0) == "synchronised"
    else:
        assert model.utc_ns(0) is None and model.error_bound_ns(0) is None
        assert model.state(0) == "unsynchronised"
