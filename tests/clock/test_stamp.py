"""stamp_ntp64 / write_ntp64 / read_ntp64: placement, bounds, buffer kinds, and the clock they read."""

from __future__ import annotations

import array
import time
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tsq._pyclock as py

GENEROUS_NS = 50_000_000  # loaded 2-core CI: a stamp and a clock read 50 ms apart is already absurd


def test_stamp_writes_at_offset_and_nothing_else(backend: ModuleType) -> None:
    buf = bytearray(b"\xaa" * 32)
    before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    written = backend.stamp_ntp64(buf, 11)
    after = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert before <= written <= after
    assert buf[:11] == b"\xaa" * 11 and buf[19:] == b"\xaa" * 13
    assert int.from_bytes(buf[11:19], "big") == py.unix_ns_to_ntp64(written)
    assert backend.read_ntp64(buf, 11, after) == written


def test_stamp_reads_the_requested_clock(backend: ModuleType) -> None:
    buf = bytearray(8)
    raw_before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    written = backend.stamp_ntp64(buf, 0, py.CLOCK_MONOTONIC_RAW)
    raw_after = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    assert raw_before <= written <= raw_after
    assert backend.read_ntp64(buf, 0, written) == written


@pytest.mark.parametrize("add_ns", [0, 1, 999_999_999, 1_000_000_000, -1, -1_500_000_001, 37 * 10**9])
def test_stamp_add_ns(backend: ModuleType, add_ns: int) -> None:
    buf = bytearray(8)
    before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    written = backend.stamp_ntp64(buf, 0, py.CLOCK_REALTIME, add_ns)
    after = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert before + add_ns <= written <= after + add_ns
    assert int.from_bytes(buf, "big") == py.unix_ns_to_ntp64(written)


def test_stamp_matches_realtime(backend: ModuleType) -> None:
    buf = bytearray(8)
    backend.stamp_ntp64(buf, 0)
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert abs(backend.read_ntp64(buf, 0, now) - now) < GENEROUS_NS


@pytest.mark.parametrize(
    "make", [bytearray, lambda n: memoryview(bytearray(n)), lambda n: memoryview(bytearray(n + 4))[2:-2]]
)
def test_buffer_kinds(backend: ModuleType, make: object) -> None:
    buf = make(16)  # type: ignore[operator]
    backend.write_ntp64(buf, 8, 123_456_789)
    assert bytes(buf[8:16]) == py.unix_ns_to_ntp64(123_456_789).to_bytes(8, "big")
    assert bytes(buf[:8]) == bytes(8)
    assert backend.read_ntp64(buf, 8, 0) == 123_456_789
    assert backend.read_ntp64(bytes(buf), 8, 0) == 123_456_789


def test_multibyte_format_buffer_is_addressed_in_bytes(backend: ModuleType) -> None:
    buf = array.array("I", [0] * 4)  # 16 bytes
    backend.write_ntp64(buf, 8, 5)
    assert buf.tobytes()[8:] == py.unix_ns_to_ntp64(5).to_bytes(8, "big")
    with pytest.raises(IndexError):
        backend.write_ntp64(buf, 9, 5)


# Beyond 32 bits too: on armhf ssize_t is 32-bit, and those offsets must still be IndexError there
# (the emulated armhf lane found OverflowError), so every platform gives the same error.
BEYOND_32_BITS = [2**31, 2**32 + 8, 2**40, 2**63 - 1, -(2**31) - 1, -(2**63)]


@pytest.mark.parametrize(
    "size,offset",
    [(8, 1), (8, -1), (7, 0), (0, 0), (16, 9), (16, -8)] + [(16, o) for o in BEYOND_32_BITS],
)
def test_out_of_range_offsets_rejected_cleanly(backend: ModuleType, size: int, offset: int) -> None:
    canary = bytearray(b"\x55" * (size + 16))
    buf = memoryview(canary)[8 : 8 + size]
    original = bytes(canary)
    for call in (
        lambda: backend.stamp_ntp64(buf, offset),
        lambda: backend.write_ntp64(buf, offset, 0),
        lambda: backend.read_ntp64(buf, offset, 0),
    ):
        with pytest.raises(IndexError, match="out of range"):
            call()
    plain = bytearray(size)
    with pytest.raises(IndexError):
        backend.stamp_ntp64(plain, offset)
    assert len(plain) == size and bytes(canary) == original


@pytest.mark.parametrize("offset", [2**63, 2**64, -(2**63) - 1])
def test_offset_beyond_64_bits_overflows(backend: ModuleType, offset: int) -> None:
    buf = bytearray(16)
    for call in (
        lambda: backend.stamp_ntp64(buf, offset),
        lambda: backend.write_ntp64(buf, offset, 0),
        lambda: backend.read_ntp64(buf, offset, 0),
    ):
        with pytest.raises(OverflowError):
            call()
    assert buf == bytearray(16)


@pytest.mark.parametrize("buf", [b"\x00" * 8, memoryview(b"\x00" * 8), "12345678", 12345678])
def test_read_only_or_non_buffers_rejected(backend: ModuleType, buf: object) -> None:
    with pytest.raises(TypeError):
        backend.stamp_ntp64(buf, 0)
    with pytest.raises(TypeError):
        backend.write_ntp64(buf, 0, 0)


def test_non_contiguous_rejected(backend: ModuleType) -> None:
    buf = memoryview(bytearray(32))[::2]
    with pytest.raises(TypeError):
        backend.stamp_ntp64(buf, 0)


def test_bad_clock_is_a_clock_error(backend: ModuleType) -> None:
    buf = bytearray(8)
    with pytest.raises(py.ClockError, match="clock id 12345"):
        backend.stamp_ntp64(buf, 0, 12345)
    assert buf == bytearray(8)


@given(size=st.integers(0, 40), offset=st.integers(-50, 50), unix_ns=st.integers(-(2**62), 2**62))
def test_fuzz_never_writes_outside(backend: ModuleType, size: int, offset: int, unix_ns: int) -> None:
    canary = bytearray(b"\x5a" * (size + 16))
    view = memoryview(canary)[8 : 8 + size]
    if 0 <= offset <= size - 8:
        backend.write_ntp64(view, offset, unix_ns)
        assert backend.read_ntp64(view, offset, unix_ns) == unix_ns
        assert canary[: 8 + offset] == b"\x5a" * (8 + offset)
        assert canary[16 + offset :] == b"\x5a" * (size - offset)
    else:
        with pytest.raises(IndexError):
            backend.write_ntp64(view, offset, unix_ns)
        assert canary == bytearray(b"\x5a" * (size + 16))


@given(unix_ns=st.integers(-(2**63), 2**63 - 1), offset=st.integers(0, 8))
def test_write_agrees_across_backends(fast: ModuleType, unix_ns: int, offset: int) -> None:
    a, b = bytearray(16), bytearray(16)
    fast.write_ntp64(a, offset, unix_ns)
    py.write_ntp64(b, offset, unix_ns)
    assert a == b
