"""Outputs: the chrony SOCK sample (layout, and a real chronyd run with -x), the system clock policy
(sans-IO) and its executor in dry-run mode only. Nothing here changes this machine's clock."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Iterator, List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.outputs import sysclock
from tsq.outputs.refclock import (
    SOCK_MAGIC,
    RefclockOutput,
    decode_sample,
    detect_time_bits,
    encode_sample,
    sample_size,
)
from tsq.outputs.sysclock import Action, SystemClockAdjuster, decide, has_cap_sys_time
from tsq.testing.daemon import ChronyProcess, subprocess_env

# ------------------------------------------------------------------------------------ sock_sample


def test_sock_sample_sizes() -> None:
    assert sample_size(64) == 40          # x86-64/arm64, and 32-bit with 64-bit time_t
    assert sample_size(32) == 32          # armhf/i386 with 32-bit time_t
    if ctypes.sizeof(ctypes.c_long) == 8:
        assert detect_time_bits() == 64


def test_sock_sample_layout_matches_c_struct_on_lp64() -> None:
    if ctypes.sizeof(ctypes.c_long) != 8:
        pytest.skip("LP64 layout check")
    data = encode_sample(1_700_000_000_123_456_789, -0.005, leap=1)
    # struct { long tv_sec; long tv_usec; double offset; int pulse, leap, _pad, magic; }
    sec, usec, offset, pulse, leap, pad, magic = struct.unpack("=qqdiiii", data)
    assert (sec, usec, offset) == (1_700_000_000, 123_456, -0.005)
    assert (pulse, leap, pad, magic) == (0, 1, 0, SOCK_MAGIC)
    assert data[-4:] == SOCK_MAGIC.to_bytes(4, "little") == b"KCOS"


def test_32bit_time_layout() -> None:
    data = encode_sample(1_700_000_000_000_001_000, 0.25, time_bits=32)
    assert struct.unpack("=iidiiii", data) == (1_700_000_000, 1, 0.25, 0, 0, 0, SOCK_MAGIC)
    with pytest.raises(ValueError, match="2038"):
        encode_sample(2**31 * 10**9, 0.0, time_bits=32)


@given(st.integers(0, 2**40 * 10**9), st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from([0, 1, 2, 3]),
       st.sampled_from([32, 64]))
def test_sock_sample_roundtrip(rt: int, offset: float, leap: int, bits: int) -> None:
    if bits == 32 and rt >= 2**31 * 10**9:
        return
    d = decode_sample(encode_sample(rt, offset, leap, bits), bits)
    assert d.realtime_ns == rt - rt % 1000 and d.offset_s == offset and d.pulse == 0
    assert d.leap == (leap if leap != 3 else 0)


@given(st.binary(max_size=64))
def test_decode_sample_total(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_sample(data)


class FixedModel:
    """A clearly fixed TimeModel for the output test: UTC = system clock + 5 ms."""

    OFFSET_NS = 5_000_000

    def utc_ns(self, raw_ns: int) -> Optional[int]:
        return None if raw_ns < 0 else self._real_at(raw_ns) + self.OFFSET_NS

    @staticmethod
    def _real_at(raw_ns: int) -> int:
        # realtime at raw_ns through a fresh correlation (raw and realtime tick together here)
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        rt = time.time_ns()
        return rt + (raw_ns - a)

    def leap(self) -> int:
        return 0


def test_refclock_sends_model_offset_to_a_datagram_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "tsq.sock")
    out = RefclockOutput(path)
    assert not out.send_offset(time.time_ns(), 0.0) and out.dropped == 1 and path in (out.last_error or "")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    try:
        raw = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        real = time.time_ns()
        assert out.send(FixedModel(), raw, real)
        d = decode_sample(rx.recv(100))
        assert abs(d.offset_s - 0.005) < 0.0005 and abs(d.realtime_ns - real) < 1000
        assert not out.send(FixedModel(), -1, real)    # unsynchronised model: nothing sent
        assert out.sent == 1
    finally:
        rx.close()
        out.close()


@pytest.fixture
def chronyd() -> Iterator[ChronyProcess]:
    """chronyd with -x (never touches the clock) and a SOCK refclock at {dir}/tsq.sock."""
    try:
        c = ChronyProcess(["refclock SOCK {dir}/tsq.sock refid TSQ poll 0"], wait_for=["{dir}/tsq.sock"])
    except FileNotFoundError:
        pytest.skip("chronyd/chronyc not installed")
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.chrony
def test_chronyd_sees_tsq_refclock_offset(chronyd: ChronyProcess) -> None:
    out = RefclockOutput(os.path.join(chronyd.dir, "tsq.sock"))
    model = FixedModel()
    deadline = time.monotonic() + 20
    row: List[str] = []
    try:
        while time.monotonic() < deadline:
            raw = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
            assert out.send(model, raw, time.time_ns()), out.last_error
            rows = [r for r in chronyd.sources() if len(r) > 8 and r[2] == "TSQ"]
            if rows and int(rows[0][5], 8) != 0:
                row = rows[0]
                if int(rows[0][5], 8) >= 3:
                    break
            time.sleep(0.3)
    finally:
        out.close()
    assert row, "chronyc sources never listed the TSQ refclock with a sample"
    assert row[0] == "#"       # a reference clock
    # chrony reports the local clock relative to the source: the system is 5 ms behind TSQ's UTC
    last_offset = float(row[7])
    assert abs(last_offset + FixedModel.OFFSET_NS / 1e9) < 0.0005, row


# ------------------------------------------------------------------------------------ system clock
MS = 1_000_000
S = 1_000_000_000


def test_decide_policy() -> None:
    step = decide(2 * S, 0, 1 * S, 3, 1000 * S)
    assert step == Action("step", -2 * S, step.reason) and "makestep" in step.reason
    assert decide(2 * S, 3, 1 * S, 3, 1000 * S).kind == "slew"       # step only in the first updates
    assert decide(-500 * MS, 0, 1 * S, 3, 1000 * S).amount_ns == 500 * MS
    assert decide(-500 * MS, 0, 1 * S, 3, 1000 * S).kind == "slew"   # below makestep: slew
    act = decide(2000 * S, 0, 1 * S, 3, 1000 * S)
    assert act.kind == "refuse" and act.amount_ns == 0 and "panic" in act.reason
    assert decide(2000 * S, 0, 1 * S, 3, 0).kind == "step"            # panic 0: no limit
    assert decide(5 * S, 0, -1, 3, 1000 * S).kind == "slew"           # makestep < 0: never step


@given(st.integers(-(10**13), 10**13), st.integers(0, 10), st.integers(-1, 10 * S), st.integers(0, 5),
       st.integers(0, 10**13))
def test_decide_properties(offset: int, index: int, makestep: int, limit: int, panic: int) -> None:
    a = decide(offset, index, makestep, limit, panic)
    if panic and abs(offset) > panic:
        assert a.kind == "refuse" and a.amount_ns == 0
    else:
        assert a.amount_ns == -offset
        assert a.kind == ("step" if index < limit and 0 <= makestep < abs(offset) else "slew")


def test_capability_parsing() -> None:
    assert has_cap_sys_time("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert not has_cap_sys_time("CapEff:\t0000000000000000\n")
    assert has_cap_sys_time("CapEff:\t0000000002000000\n")
    assert not has_cap_sys_time("CapEff:\t0000000001ffffff\n")
    assert not has_cap_sys_time("nothing here")
    assert not has_cap_sys_time("CapEff: zz")
    assert isinstance(has_cap_sys_time(), bool)


def test_timex_layout_and_requests() -> None:
    # glibc's struct timex is 208 bytes on LP64 (and 128 on ILP32 with the legacy symbol)
    assert ctypes.sizeof(sysclock.Timex) == (208 if ctypes.sizeof(ctypes.c_long) == 8 else 128)
    tx = sysclock.step_timex(-1_500_000_000)
    assert tx.modes == sysclock.ADJ_SETOFFSET | sysclock.ADJ_NANO
    assert (tx.time.tv_sec, tx.time.tv_usec) == (-2, 500_000_000)   # normalised: 0 <= ns < 1e9
    tx = sysclock.slew_timex(-1_234_567)
    assert tx.modes == sysclock.ADJ_OFFSET_SINGLESHOT and tx.offset == -1235
    tx = sysclock.frequency_timex(12.5, 3_000)
    assert tx.freq == round(12.5 * 65536) and tx.maxerror == 3
    assert sysclock.frequency_timex(900.0, 0).freq == 500 * 65536


def test_dry_run_adjuster_never_writes() -> None:
    adj = SystemClockAdjuster(makestep=0.1, makestep_limit=2, panic=10.0, dry_run=True)
    assert adj._adjtimex is None     # no handle to the syscall exists in dry-run mode
    assert adj.update(500 * MS, 1.5, 2000).startswith("would step the system clock by -0.500000000 s")
    assert "would set kernel frequency +1.500 ppm" in adj.update(200 * MS, 1.5, 2000)
    assert adj.update(300 * MS).startswith("would slew")               # third update: no more steps
    assert adj.update(20 * S).startswith("refused")                     # beyond panic
    assert adj.updates == 3


def _without_cap_sys_time(cmd: List[str]) -> List[str]:
    """`cmd` run with CAP_SYS_TIME dropped from the bounding set (so not effective after exec)."""
    if has_cap_sys_time() and shutil.which("setpriv") is None:
        pytest.skip("need setpriv (util-linux) to drop CAP_SYS_TIME")
    return ["setpriv", "--bounding-set", "-sys_time", *cmd] if has_cap_sys_time() else cmd


def test_without_capability_refuses_clearly() -> None:
    code = ("from tsq.outputs.sysclock import SystemClockAdjuster, SysclockError, has_cap_sys_time\n"
            "assert not has_cap_sys_time()\n"
            "try:\n    SystemClockAdjuster()\nexcept SysclockError as e:\n    print(e)\n"
            "SystemClockAdjuster(dry_run=True)\nprint('dry-run ok')\n")
    r = subprocess.run(_without_cap_sys_time([sys.executable, "-c", code]), capture_output=True, text=True,
                       timeout=60, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    assert "needs CAP_SYS_TIME" in r.stdout and "--dry-run" in r.stdout and "dry-run ok" in r.stdout
