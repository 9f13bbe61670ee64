"""The kernel's view of the system clock: `struct timex` and a read-only `adjtimex` (modes = 0).

Reached through `tsq.clock` (reading) and `tsq.outputs.sysclock` (the only writer, which builds
its own timex values on the same struct). Nothing here changes any clock.

ABI: `struct timex` is declared with C `long` fields and called through glibc's plain `adjtimex`
symbol, which on 32-bit systems is the 32-bit-time_t entry point whatever the distribution's default
time_t: the layout and the symbol always agree (the `time` field, the only one affected by 2038, is
only used by ADJ_SETOFFSET as a small offset).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, List, Optional

STA_INS = 0x0010
STA_DEL = 0x0020
STA_UNSYNC = 0x0040
TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """struct timex (Linux/glibc, native `long` layout, with the kernel's trailing padding)."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


_ADJTIMEX: List[Any] = []   # [function] once looked up ([None] where absent)

# Where `adjtimex` is looked up: the running program's own symbols (None: the interpreter is linked
# against the C library, so its symbols are there), then glibc by its soname. Not
# `ctypes.util.find_library`: it runs `ldconfig -p` in a subprocess and its import (shutil,
# tempfile, bz2, lzma) is ~1.1 MB of a Raspberry Pi gateway's 40 (docs/benchmarks.md).
_LIBC_NAMES = (None, "libc.so.6")


def adjtimex_function() -> Any:
    """glibc's `adjtimex` (argtypes set), or None where there is no C library to find it in."""
    if not _ADJTIMEX:
        fn = None
        for name in _LIBC_NAMES:
            try:
                fn = ctypes.CDLL(name, use_errno=True).adjtimex
            except (OSError, AttributeError):
                continue
            fn.argtypes = [ctypes.POINTER(Timex)]
            fn.restype = ctypes.c_int
            break
        _ADJTIMEX.append(fn)
    return _ADJTIMEX[0]


@dataclass(frozen=True)
class KernelClockStatus:
    """What a read-only adjtimex says about the system clock."""

    synchronised: bool
    maxerror_ns: int
    esterror_ns: int
    tai_offset_s: int
    status: int

    @property
    def leap(self) -> int:
        """TimeModel.leap() code from the kernel's STA_INS/STA_DEL bits."""
        return leap_from_status(self.status)


def read_kernel_status() -> Optional[KernelClockStatus]:
    """adjtimex with modes=0 (a pure read). None where adjtimex is unavailable."""
    fn = adjtimex_function()
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
    if status & STA_INS:
        return 1
    if status & STA_DEL:
        return 2
    return 0
