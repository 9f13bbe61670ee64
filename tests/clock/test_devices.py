"""PHC and PPS devices. No /dev/ptpN or /dev/ppsN exists here: the absent and wrong-device paths are
real; the sample-selection math is tested on its own (sans-IO)."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

import tsq._pyclock as py


def _absent(path: str) -> str:
    if os.path.exists(path):
        pytest.skip(f"{path} exists on this machine; the absent-device test needs it missing")
    return path


def test_absent_phc(backend: ModuleType) -> None:
    path = _absent("/dev/ptp0")
    with pytest.raises(py.ClockError) as info:
        backend.PhcClock(path)
    assert "/dev/ptp0" in str(info.value) and "PTP hardware clock" in str(info.value)


def test_absent_pps(backend: ModuleType) -> None:
    path = _absent("/dev/pps0")
    with pytest.raises(py.ClockError) as info:
        backend.PpsDevice(path)
    assert "/dev/pps0" in str(info.value) and "PPS" in str(info.value)


@pytest.mark.parametrize("cls,what", [("PhcClock", "PTP hardware clock"), ("PpsDevice", "PPS")])
def test_wrong_kind_of_device(backend: ModuleType, cls: str, what: str) -> None:
    """/dev/null exists but answers neither PTP_CLOCK_GETCAPS nor PPS_GETCAP (ENOTTY)."""
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(py.ClockError) as info:
        getattr(backend, cls)("/dev/null")
    assert "/dev/null" in str(info.value) and what in str(info.value)
    assert len(os.listdir("/proc/self/fd")) == before  # the descriptor was closed again


def test_best_extended_offset_picks_narrowest() -> None:
    corr = py.best_extended_offset([(100, 5_000, 300), (1_000, 5_900, 1_040), (2_000, 7_000, 2_500)])
    assert corr == py.Correlation(ref_ns=5_900, sys_ns=1_020, width_ns=40)


def test_best_basic_offset_pairs_interleaved_stamps() -> None:
    # sys, phc, sys, phc, sys: brackets (10, 55, 100) and (100, 150, 120)
    corr = py.best_basic_offset([10, 55, 100, 150, 120])
    assert corr == py.Correlation(ref_ns=150, sys_ns=110, width_ns=20)
    with pytest.raises(ValueError):
        py.best_basic_offset([1, 2])
    with pytest.raises(ValueError):
        py.best_extended_offset([])


def test_fd_to_clockid() -> None:
    assert py.fd_to_clockid(3) == -29  # ((~3) << 3) | 3, as the kernel's FD_TO_CLOCKID
    assert py.fd_to_clockid(0) == -5
