"""Draft §6.2 arithmetic and the four §6.6 rejections (tsq.sync.exchange)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.sync.exchange import Exchange, SampleRejected, check, offset_delay

NS = 1_000_000_000
UNIX = 1_790_000_000 * NS          # the server's clock; the client's raw clock starts near 0
RAW_TO_UNIX = UNIX - 10 * NS       # UTC - raw


def ex(t1: int, t2: int, t3: int, t4: int) -> Exchange:
    return Exchange("s", "datagram", t1, t2, t3, t4)


def good() -> Exchange:
    t1 = 10 * NS
    return ex(t1, RAW_TO_UNIX + t1 + 40_000, RAW_TO_UNIX + t1 + 60_000, t1 + 100_000)


def test_offset_and_delay_of_a_symmetric_exchange() -> None:
    e = good()
    assert e.offset_ns == RAW_TO_UNIX and e.delay_ns == 80_000
    assert offset_delay(0, 5, 5, 10) == (0, 10)
    check(e, RAW_TO_UNIX)                                     # passes


@pytest.mark.parametrize("make, message", [
    (lambda e: ex(e.t1_raw, e.t2_unix, e.t3_unix, e.t1_raw - 1), "T4 earlier than T1"),
    (lambda e: ex(e.t1_raw, e.t3_unix + 1, e.t3_unix, e.t4_raw), "T3 earlier than T2"),
    # the server claims to have held the request longer than the whole round trip took
    (lambda e: ex(e.t1_raw, e.t2_unix, e.t2_unix + 200_000, e.t4_raw), "non-positive round-trip time"),
])
def test_each_rejection_names_its_check(make: object, message: str) -> None:
    e = make(good())  # type: ignore[operator]
    with pytest.raises(SampleRejected, match=message):
        check(e, RAW_TO_UNIX)


def test_zero_round_trip_is_rejected() -> None:
    t1 = 10 * NS
    e = ex(t1, RAW_TO_UNIX + t1, RAW_TO_UNIX + t1 + 100_000, t1 + 100_000)
    assert e.delay_ns == 0
    with pytest.raises(SampleRejected, match="non-positive round-trip time 0 ns"):
        check(e, RAW_TO_UNIX)


def test_offset_beyond_the_threshold_against_the_current_estimate() -> None:
    e = good()
    check(e, RAW_TO_UNIX + 86_400 * NS)                       # exactly at the default 24 h: accepted
    with pytest.raises(SampleRejected, match=r"offset \+86400.000 s beyond threshold"):
        check(e, RAW_TO_UNIX - 86_400 * NS - 1)
    with pytest.raises(SampleRejected, match=r"offset -0.002 s beyond threshold"):
        check(e, RAW_TO_UNIX + 2_000_000, max_offset_ns=1_000_000)


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.integers(0, 2**62), st.integers(0, 2**62),
       st.integers(0, 2**62))
def test_check_is_total_and_accepts_only_ordered_positive_exchanges(t1: int, t2: int, t3: int, t4: int,
                                                                    ref: int) -> None:
    e = ex(t1, t2, t3, t4)
    try:
        check(e, ref)
    except SampleRejected:
        return
    assert t4 >= t1 and t3 >= t2 and e.delay_ns > 0
    assert abs(e.offset_ns - ref) <= 86_400 * NS
