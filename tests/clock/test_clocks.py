"""Clock reads, correlation of two clocks, realtime->raw mapping, backend selection."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import pytest

import tsq._pyclock as py

GENEROUS_WIDTH_NS = 1_000_000  # a read-read-read bracket wider than 1 ms five times in a row: broken


def test_clock_ids_are_the_kernels(backend: ModuleType) -> None:
    assert backend.CLOCK_REALTIME == time.CLOCK_REALTIME
    assert backend.CLOCK_MONOTONIC_RAW == time.CLOCK_MONOTONIC_RAW
    assert backend.CLOCK_TAI == 11 and backend.CLOCK_BOOTTIME == 7  # include/uapi/linux/time.h
    assert backend.NTP_UNIX_OFFSET_S == 2208988800


@pytest.mark.parametrize(
    "name,clock",
    [("raw_ns", time.CLOCK_MONOTONIC_RAW), ("realtime_ns", time.CLOCK_REALTIME), ("tai_ns", py.CLOCK_TAI)],
)
def test_named_reads_bracket_with_the_stdlib(backend: ModuleType, name: str, clock: int) -> None:
    before = time.clock_gettime_ns(clock)
    value = getattr(backend, name)()
    after = time.clock_gettime_ns(clock)
    assert isinstance(value, int) and before <= value <= after


@pytest.mark.parametrize("clock", [time.CLOCK_MONOTONIC_RAW, py.CLOCK_BOOTTIME, time.CLOCK_MONOTONIC])
def test_monotonic_clocks_never_go_back(backend: ModuleType, clock: int) -> None:
    reads = [backend.clock_ns(clock) for _ in range(10_000)]
    assert all(b >= a for a, b in zip(reads, reads[1:]))
    assert reads[-1] > reads[0]


def test_unknown_clock_is_a_clock_error(backend: ModuleType) -> None:
    with pytest.raises(py.ClockError, match="clock id 4242") as info:
        backend.clock_ns(4242)
    assert isinstance(info.value, OSError)


def test_correlate_realtime_raw(backend: ModuleType) -> None:
    before_rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
    corr = backend.correlate(py.CLOCK_REALTIME, py.CLOCK_MONOTONIC_RAW, 5)
    after_raw = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    assert isinstance(corr, py.Correlation)
    assert 0 <= corr.width_ns < GENEROUS_WIDTH_NS
    assert corr.ref_ns >= before_rt and corr.sys_ns <= after_raw
    # a second correlation maps realtime to raw consistently (clocks can slew, not by 1 ms in a blink)
    later = backend.correlate(py.CLOCK_REALTIME, py.CLOCK_MONOTONIC_RAW)
    assert abs(py.realtime_to_raw(later.ref_ns, corr) - later.sys_ns) < GENEROUS_WIDTH_NS


def test_correlate_rejects_zero_tries(backend: ModuleType) -> None:
    with pytest.raises(ValueError):
        backend.correlate(py.CLOCK_REALTIME, py.CLOCK_MONOTONIC_RAW, 0)


def test_correlate_bad_clock(backend: ModuleType) -> None:
    with pytest.raises(py.ClockError):
        backend.correlate(py.CLOCK_REALTIME, 4242)


def test_realtime_to_raw_arithmetic() -> None:
    corr = py.Correlation(ref_ns=1_000_000_000_000, sys_ns=5_000, width_ns=100)
    assert py.realtime_to_raw(1_000_000_000_250, corr) == 5_250
    assert py.realtime_to_raw(999_999_999_000, corr) == 4_000


def test_realtime_to_raw_cache(backend: ModuleType) -> None:
    conv = backend.RealtimeToRaw(max_age_ns=1_000_000)
    raw_before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
    raw_after = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    mapped = conv.convert(rt)
    assert raw_before - GENEROUS_WIDTH_NS < mapped < raw_after + GENEROUS_WIDTH_NS
    first = conv.correlation
    deadline = time.monotonic() + 5
    while time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW) - first.sys_ns <= 1_000_000:
        assert time.monotonic() < deadline
    assert conv.correlation.sys_ns > first.sys_ns  # stale: refreshed


def _backend_in_subprocess(env_value: str) -> str:
    # The same tsq this test imported (installed, under tox), not whatever the cwd holds.
    import tsq

    env = dict(os.environ, TSQ_PURE_PYTHON=env_value, PYTHONPATH=str(Path(tsq.__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", "import tsq.clock as c; print(c.BACKEND, c.stamp_ntp64.__module__)"],
        env=env, capture_output=True, text=True, timeout=60, check=True, cwd=tempfile.gettempdir(),
    )
    return out.stdout.strip()


def test_pure_python_forced() -> None:
    assert _backend_in_subprocess("1") == "python tsq._pyclock"


def test_cython_selected_when_built(fast: ModuleType) -> None:
    assert _backend_in_subprocess("").split()[0] == "cython"


def test_shared_types_whatever_the_backend() -> None:
    import tsq.clock as clock

    assert clock.ClockError is py.ClockError and clock.Correlation is py.Correlation
    assert issubclass(clock.PpsTimeout, clock.ClockError) and issubclass(clock.PpsTimeout, TimeoutError)
    assert clock.BACKEND in ("cython", "python")


def test_the_clock_api_is_whole_on_either_backend() -> None:
    import tsq._pyclock as pure
    import tsq.clock as api

    for name in api.__all__:
        assert hasattr(api, name), name
    # every backend function the facade takes exists in the pure twin, whose signatures mypy reads
    for name in api._BACKEND_API:
        assert hasattr(pure, name), name
        if api.BACKEND == "cython":
            import tsq._fastclock as fast
            assert getattr(api, name) is getattr(fast, name)
