"""NTP 64-bit timestamp conversions: vectors, era handling, rounding, and both backends agreeing."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tsq._pyclock as py

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ntp_timestamps.json"
ERA1_START_NS = 2085978496 * 10**9  # 2036-02-07T06:28:16Z
YEAR_NS = 365 * 86400 * 10**9
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NTP64 = st.integers(min_value=0, max_value=2**64 - 1)
# 1968..2104+ and then some: pivots anywhere from 1900 to 2200
PIVOT = st.integers(min_value=-70 * YEAR_NS, max_value=230 * YEAR_NS)


def _vectors() -> List[Dict[str, Any]]:
    data: List[Dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return data


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: str(v["note"]))
def test_vectors(backend: ModuleType, vector: Dict[str, Any]) -> None:
    ntp64 = int(vector["ntp64"], 16)
    if vector["direction"] == "unix_to_ntp":
        assert backend.unix_ns_to_ntp64(vector["unix_ns"]) == ntp64
    else:
        assert backend.ntp64_to_unix_ns(ntp64, vector["pivot_unix_ns"]) == vector["unix_ns"]


def test_vectors_cover_the_boundaries() -> None:
    notes = " | ".join(v["note"] for v in _vectors())
    for needed in ("era 0 end", "era 1 start", "1970", "2026", "2036 boundary + 1 ns", "2104", "1968"):
        assert needed in notes


@given(unix_ns=st.integers(min_value=-120 * YEAR_NS, max_value=250 * YEAR_NS))
@example(unix_ns=ERA1_START_NS - 1)
@example(unix_ns=ERA1_START_NS)
@example(unix_ns=ERA1_START_NS + 1)
def test_round_trip_is_exact(unix_ns: int) -> None:
    """ntp64 resolution is 0.23 ns, so with half-up rounding both ways the round trip is exact."""
    ntp = py.unix_ns_to_ntp64(unix_ns)
    assert 0 <= ntp < 2**64
    assert py.ntp64_to_unix_ns(ntp, unix_ns) == unix_ns
    # a pivot anywhere within +-60 years picks the same era
    assert py.ntp64_to_unix_ns(ntp, unix_ns + 60 * YEAR_NS) == unix_ns
    assert py.ntp64_to_unix_ns(ntp, unix_ns - 60 * YEAR_NS) == unix_ns


@given(unix_ns=INT64)
def test_round_trip_cython(fast: ModuleType, unix_ns: int) -> None:
    ntp = fast.unix_ns_to_ntp64(unix_ns)
    assert abs(fast.ntp64_to_unix_ns(ntp, unix_ns) - unix_ns) <= 1


@given(unix_ns=st.one_of(INT64, st.integers(min_value=-(2**80), max_value=2**80)))
def test_backends_agree_to_ntp(fast: ModuleType, unix_ns: int) -> None:
    assert fast.unix_ns_to_ntp64(unix_ns) == py.unix_ns_to_ntp64(unix_ns)


@given(ntp=NTP64, pivot=st.one_of(PIVOT, INT64, st.integers(min_value=-(2**70), max_value=2**70)))
@example(ntp=0, pivot=ERA1_START_NS)
@example(ntp=2**63, pivot=0)
@example(ntp=0, pivot=2**62)
@example(ntp=2**64 - 1, pivot=-(2**62))
def test_backends_agree_to_unix(fast: ModuleType, ntp: int, pivot: int) -> None:
    assert fast.ntp64_to_unix_ns(ntp, pivot) == py.ntp64_to_unix_ns(ntp, pivot)


@given(ntp=NTP64, pivot=PIVOT)
def test_result_is_the_era_nearest_the_pivot(backend: ModuleType, ntp: int, pivot: int) -> None:
    unix_ns = backend.ntp64_to_unix_ns(ntp, pivot)
    half_range_ns = (2**63 * 10**9) >> 32  # 2**63 units of 2**-32 s, about 68 years
    assert abs(unix_ns - pivot) <= half_range_ns + 1
    # and it is that ntp64 value to within the 1 ns rounding (4.3 units of 2**-32 s)
    diff = (py.unix_ns_to_ntp64(unix_ns) - ntp + 2**63) % 2**64 - 2**63
    assert abs(diff) <= 3


@given(unix_ns=PIVOT)
def test_wraps_modulo_2_64(backend: ModuleType, unix_ns: int) -> None:
    era_ns = (2**64 * 10**9) >> 32  # one NTP era is 2**32 s, exactly
    assert backend.unix_ns_to_ntp64(unix_ns + era_ns) == backend.unix_ns_to_ntp64(unix_ns)


@pytest.mark.parametrize("bad", [-1, 2**64, 2**70])
def test_out_of_range_ntp64_rejected(backend: ModuleType, bad: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        backend.ntp64_to_unix_ns(bad, 0)
