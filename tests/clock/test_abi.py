"""Kernel ABI: the pure-Python ioctl numbers / ctypes layouts and the Cython build's header values,
both checked against a C program compiled here from the real system headers (the truth)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Dict

import pytest

import tsq._pyclock as py

C_PROGRAM = r"""
#include <stdio.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <linux/ptp_clock.h>
#include <linux/pps.h>
#include <linux/net_tstamp.h>
#include <linux/errqueue.h>
#define SHOW(name, value) printf("%s %llu\n", name, (unsigned long long)(value))
int main(void) {
    SHOW("PTP_CLOCK_GETCAPS", PTP_CLOCK_GETCAPS);
    SHOW("PTP_SYS_OFFSET", PTP_SYS_OFFSET);
    SHOW("PTP_SYS_OFFSET_PRECISE", PTP_SYS_OFFSET_PRECISE);
    SHOW("PTP_SYS_OFFSET_EXTENDED", PTP_SYS_OFFSET_EXTENDED);
    SHOW("PPS_GETCAP", PPS_GETCAP);
    SHOW("PPS_FETCH", PPS_FETCH);
    SHOW("ptp_clock_time", sizeof(struct ptp_clock_time));
    SHOW("ptp_clock_caps", sizeof(struct ptp_clock_caps));
    SHOW("ptp_sys_offset", sizeof(struct ptp_sys_offset));
    SHOW("ptp_sys_offset_extended", sizeof(struct ptp_sys_offset_extended));
    SHOW("ptp_sys_offset_precise", sizeof(struct ptp_sys_offset_precise));
    SHOW("pps_ktime", sizeof(struct pps_ktime));
    SHOW("pps_kinfo", sizeof(struct pps_kinfo));
    SHOW("pps_fdata", sizeof(struct pps_fdata));
    SHOW("timespec", sizeof(struct timespec));
    SHOW("scm_timestamping", sizeof(struct scm_timestamping));
    SHOW("sock_extended_err", sizeof(struct sock_extended_err));
    SHOW("SO_TIMESTAMPNS_OLD", SO_TIMESTAMPNS_OLD);
    SHOW("SO_TIMESTAMPING_OLD", SO_TIMESTAMPING_OLD);
    SHOW("SO_TIMESTAMPNS_NEW", SO_TIMESTAMPNS_NEW);
    SHOW("SO_TIMESTAMPING_NEW", SO_TIMESTAMPING_NEW);
    SHOW("SOF_TIMESTAMPING_TX_SOFTWARE", SOF_TIMESTAMPING_TX_SOFTWARE);
    SHOW("SOF_TIMESTAMPING_RX_SOFTWARE", SOF_TIMESTAMPING_RX_SOFTWARE);
    SHOW("SOF_TIMESTAMPING_SOFTWARE", SOF_TIMESTAMPING_SOFTWARE);
    SHOW("SOF_TIMESTAMPING_OPT_ID", SOF_TIMESTAMPING_OPT_ID);
    SHOW("SOF_TIMESTAMPING_OPT_TSONLY", SOF_TIMESTAMPING_OPT_TSONLY);
    SHOW("SO_EE_ORIGIN_TIMESTAMPING", SO_EE_ORIGIN_TIMESTAMPING);
    SHOW("SCM_TSTAMP_SND", SCM_TSTAMP_SND);
    return 0;
}
"""


@pytest.fixture(scope="module")
def header_truth(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, int]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc/cc) to read the kernel headers with")
    work: Path = tmp_path_factory.mktemp("abi")
    source, program = work / "abi.c", work / "abi"
    source.write_text(C_PROGRAM)
    subprocess.run([gcc, "-std=gnu99", "-o", str(program), str(source)], check=True, timeout=120)
    out = subprocess.run([str(program)], check=True, capture_output=True, text=True, timeout=30).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def _subset(truth: Dict[str, int], keys: Dict[str, int]) -> Dict[str, int]:
    return {k: truth[k] for k in keys}


def test_ioctl_numbers_match_headers(backend: ModuleType, header_truth: Dict[str, int]) -> None:
    numbers = backend.ioctl_numbers()
    assert len(numbers) == 6
    assert numbers == _subset(header_truth, numbers)


def test_struct_sizes_match_headers(backend: ModuleType, header_truth: Dict[str, int]) -> None:
    sizes = backend.struct_sizes()
    assert sizes == _subset(header_truth, sizes)


def test_socket_constants_match_headers(backend: ModuleType, header_truth: Dict[str, int]) -> None:
    constants = backend.socket_constants()
    assert constants == _subset(header_truth, constants)


def test_backends_agree(fast: ModuleType) -> None:
    assert fast.ioctl_numbers() == py.ioctl_numbers()
    assert fast.struct_sizes() == py.struct_sizes()
    assert fast.socket_constants() == py.socket_constants()


def test_ioc_encoding() -> None:
    # _IOWR('=', 9, 1216 bytes) by hand: dir 3 << 30 | size << 16 | '=' << 8 | nr
    assert py._ioc(3, "=", 9, 1216) == (3 << 30) | (1216 << 16) | (0x3D << 8) | 9
    with pytest.raises(ValueError):
        py._ioc(3, "=", 9, 1 << 14)
