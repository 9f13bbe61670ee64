"""Pure-Python clock backend of `tsq.clock` (the fallback when `tsq._fastclock` is not built).

Also the home of the types both backends share (`ClockError`, `Correlation`, `PpsEvent`,
`TimestampConfig`, `TxTimestamp`) and of the timestamped-UDP helpers, which the Cython backend
re-exports from here. Import `tsq.clock`, not this module.

ABI assumptions of the ctypes layouts and ioctl numbers below:
- the ioctl request encoding is the asm-generic one (x86, x86-64, arm, aarch64, riscv):
  dir in bits 30-31, size in bits 16-29, type in 8-15, nr in 0-7. Not powerpc/mips/sparc/alpha.
- PTP and PPS structures use fixed-width `__s64`/`__u32` fields, so their layout does not depend on
  `time_t`; ctypes applies the running ABI's alignment of 64-bit fields (4 on i386, 8 on armhf).
- Socket timestamps arrive as `struct timespec`, whose size does depend on `time_t`. The kernel tags
  each control message with the layout it used (`SO_TIMESTAMPNS_OLD` = native `long` pair,
  `SO_TIMESTAMPNS_NEW` = two 64-bit fields), so the parser goes by the message type, not a guess.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import operator
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from tsq.ntp import NTP_UNIX_OFFSET_S as NTP_UNIX_OFFSET_S
from tsq.ntp import ntp64_to_unix_ns as ntp64_to_unix_ns
from tsq.ntp import unix_ns_to_ntp64 as unix_ns_to_ntp64

WritableBuffer = Union[bytearray, memoryview]

CLOCK_REALTIME: int = time.CLOCK_REALTIME
CLOCK_MONOTONIC_RAW: int = time.CLOCK_MONOTONIC_RAW
CLOCK_MONOTONIC: int = time.CLOCK_MONOTONIC
CLOCK_TAI: int = getattr(time, "CLOCK_TAI", 11)
CLOCK_BOOTTIME: int = getattr(time, "CLOCK_BOOTTIME", 7)

_NS = 1_000_000_000
_TWO63 = 1 << 63
_NTP64 = struct.Struct(">Q")


class ClockError(OSError):
    """A clock or timing device is absent, of the wrong kind, or failed; the message names it."""


class PpsTimeout(ClockError, TimeoutError):
    """`PpsDevice.fetch` saw no pulse within its timeout."""


def clock_error(err: int, what: str, expected: str) -> ClockError:
    """A ClockError whose text says which device/clock failed, why, and what was expected."""
    return ClockError(err, f"{what}: {os.strerror(err)} (expected {expected})")


# --------------------------------------------------------------------------------------------------
# Clock reads


def fd_to_clockid(fd: int) -> int:
    """The dynamic POSIX clock id of an open /dev/ptpN (the kernel's FD_TO_CLOCKID)."""
    return ((~fd) << 3) | 3


def clock_ns(clock_id: int) -> int:
    """clock_gettime(clock_id) as int ns; ClockError naming the clock if it cannot be read."""
    try:
        return time.clock_gettime_ns(clock_id)
    except OSError as exc:
        err = exc.errno or errno.EINVAL
        raise clock_error(err, f"clock id {clock_id}", "a readable POSIX clock") from exc


def raw_ns() -> int:
    """CLOCK_MONOTONIC_RAW in ns: the one timescale of every local stamp."""
    return time.clock_gettime_ns(CLOCK_MONOTONIC_RAW)


def realtime_ns() -> int:
    """CLOCK_REALTIME in ns (unix ns)."""
    return time.clock_gettime_ns(CLOCK_REALTIME)


def tai_ns() -> int:
    """CLOCK_TAI in ns (realtime plus the kernel's TAI offset, which is 0 unless someone set it)."""
    return time.clock_gettime_ns(CLOCK_TAI)


# --------------------------------------------------------------------------------------------------
# NTP 64-bit timestamps


def _offset(offset: Any) -> int:
    """An index as int; OverflowError beyond a signed 64-bit integer, as the Cython backend raises
    (on every platform: its offsets are int64_t, not the 32-bit ssize_t of armhf)."""
    value = operator.index(offset)
    if not -_TWO63 <= value < _TWO63:
        raise OverflowError(f"offset {value} does not fit a signed 64-bit integer")
    return value


def _check_span(buf: Any, offset: int) -> None:
    """Raise unless buf is a writable byte buffer with 8 bytes at offset (no wrap, no growth)."""
    if type(buf) is bytearray:
        size = len(buf)
    else:
        try:
            view = memoryview(buf)
        except TypeError as exc:
            raise TypeError(f"expected a writable bytes-like buffer, got {type(buf).__name__}") from exc
        if view.readonly:
            raise TypeError(f"buffer is read-only ({type(buf).__name__})")
        if not view.c_contiguous:
            raise TypeError("buffer is not C-contiguous")
        size = view.nbytes
    offset = _offset(offset)
    if offset < 0 or offset + 8 > size:
        raise IndexError(f"offset {offset} out of range for an 8-byte timestamp in a {size}-byte buffer")


def _pack(buf: Any, offset: int, value: int) -> None:
    if type(buf) is bytearray:
        _NTP64.pack_into(buf, offset, value)
    else:
        memoryview(buf).cast("B")[offset : offset + 8] = _NTP64.pack(value)


def write_ntp64(buf: WritableBuffer, offset: int, unix_ns: int) -> None:
    """Write ntp64(unix_ns) big-endian at buf[offset:offset+8]; other bytes untouched."""
    _check_span(buf, offset)
    _pack(buf, offset, unix_ns_to_ntp64(unix_ns))


def read_ntp64(buf: Any, offset: int, pivot_unix_ns: int) -> int:
    """Read the big-endian ntp64 at buf[offset:offset+8] and return it as unix ns (era from pivot)."""
    view = memoryview(buf).cast("B") if type(buf) is not bytes and type(buf) is not bytearray else buf
    offset = _offset(offset)
    if offset < 0 or offset + 8 > len(view):
        raise IndexError(f"offset {offset} out of range for an 8-byte timestamp in a {len(view)}-byte buffer")
    (value,) = _NTP64.unpack_from(view, offset)
    return ntp64_to_unix_ns(value, pivot_unix_ns)


def stamp_ntp64(buf: WritableBuffer, offset: int, clock_id: int = CLOCK_REALTIME, add_ns: int = 0) -> int:
    """Read the clock, write ntp64(now + add_ns) at buf[offset:offset+8]; return the unix ns written."""
    _check_span(buf, offset)
    try:
        now = time.clock_gettime_ns(clock_id) + add_ns
    except OSError:
        now = clock_ns(clock_id) + add_ns  # raises the ClockError naming the clock
    _pack(buf, offset, unix_ns_to_ntp64(now))
    return now


# --------------------------------------------------------------------------------------------------
# Correlated reads of two clocks


@dataclass(frozen=True)
class Correlation:
    """One reading of two clocks taken close together."""

    ref_ns: int  # clock A (e.g. realtime or PHC) at the midpoint
    sys_ns: int  # clock B (e.g. raw) at the same instant
    width_ns: int  # bracket width: the uncertainty of the pairing


def correlate(clock_a: int, clock_b: int, tries: int = 5) -> Correlation:
    """Read A, B, A `tries` times; keep the narrowest bracket (least likely to hold an interrupt)."""
    if tries < 1:
        raise ValueError(f"tries must be >= 1, got {tries}")
    gettime = time.clock_gettime_ns
    clock_ns(clock_a), clock_ns(clock_b)  # ClockError naming a clock that cannot be read
    best: Optional[Correlation] = None
    for _ in range(tries):
        a1 = gettime(clock_a)
        b = gettime(clock_b)
        a2 = gettime(clock_a)
        width = a2 - a1
        if best is None or width < best.width_ns:
            best = Correlation(ref_ns=a1 + width // 2, sys_ns=b, width_ns=width)
    assert best is not None
    return best


def realtime_to_raw(realtime_ns: int, corr: Correlation) -> int:
    """Map a realtime stamp to raw ns with corr = correlate(REALTIME, MONOTONIC_RAW).

    Ignores the rate difference between the clocks since corr was taken (at most ~500 ppm of slew):
    keep corr fresh (see RealtimeToRaw).
    """
    return realtime_ns - corr.ref_ns + corr.sys_ns


class RealtimeToRaw:
    """realtime -> raw ns through a cached correlation, refreshed when older than max_age_ns."""

    def __init__(self, max_age_ns: int = 100_000_000) -> None:
        self.max_age_ns = max_age_ns
        self._corr = correlate(CLOCK_REALTIME, CLOCK_MONOTONIC_RAW)

    @property
    def correlation(self) -> Correlation:
        """The correlation in use (refreshed first if stale)."""
        if raw_ns() - self._corr.sys_ns > self.max_age_ns:
            self._corr = correlate(CLOCK_REALTIME, CLOCK_MONOTONIC_RAW)
        return self._corr

    def convert(self, realtime_ns: int) -> int:
        return realtime_to_raw(realtime_ns, self.correlation)


# --------------------------------------------------------------------------------------------------
# ioctl numbers and kernel structures (asm-generic encoding; see module docstring)

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} too large")
    return (direction << _IOC_DIRSHIFT) | (ord(kind) << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (
        size << _IOC_SIZESHIFT
    )


PTP_MAX_SAMPLES = 25
PPS_TIME_INVALID = 1
PPS_CAPTUREASSERT = 0x01
PPS_CAPTURECLEAR = 0x02


class PtpClockTime(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


class PtpClockCaps(ctypes.Structure):
    _fields_ = [
        ("max_adj", ctypes.c_int),
        ("n_alarm", ctypes.c_int),
        ("n_ext_ts", ctypes.c_int),
        ("n_per_out", ctypes.c_int),
        ("pps", ctypes.c_int),
        ("n_pins", ctypes.c_int),
        ("cross_timestamping", ctypes.c_int),
        ("adjust_phase", ctypes.c_int),
        ("rsv", ctypes.c_int * 12),
    ]


class PtpSysOffset(ctypes.Structure):
    _fields_ = [
        ("n_samples", ctypes.c_uint),
        ("rsv", ctypes.c_uint * 3),
        ("ts", PtpClockTime * (2 * PTP_MAX_SAMPLES + 1)),
    ]


class PtpSysOffsetExtended(ctypes.Structure):
    _fields_ = [
        ("n_samples", ctypes.c_uint),
        ("rsv", ctypes.c_uint * 3),  # rsv[0] is `clockid` in kernels >= 6.12; 0 = CLOCK_REALTIME
        ("ts", (PtpClockTime * 3) * PTP_MAX_SAMPLES),
    ]


class PtpSysOffsetPrecise(ctypes.Structure):
    _fields_ = [
        ("device", PtpClockTime),
        ("sys_realtime", PtpClockTime),
        ("sys_monoraw", PtpClockTime),
        ("rsv", ctypes.c_uint * 4),
    ]


class PpsKtime(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_int32), ("flags", ctypes.c_uint32)]


class PpsKinfo(ctypes.Structure):
    _fields_ = [
        ("assert_sequence", ctypes.c_uint32),
        ("clear_sequence", ctypes.c_uint32),
        ("assert_tu", PpsKtime),
        ("clear_tu", PpsKtime),
        ("current_mode", ctypes.c_int),
    ]


class PpsFdata(ctypes.Structure):
    _fields_ = [("info", PpsKinfo), ("timeout", PpsKtime)]


_PTR = ctypes.sizeof(ctypes.c_void_p)  # the PPS ioctls encode the size of a *pointer* (kernel quirk)

PTP_CLOCK_GETCAPS = _ioc(_IOC_READ, "=", 1, ctypes.sizeof(PtpClockCaps))
PTP_SYS_OFFSET = _ioc(_IOC_WRITE, "=", 5, ctypes.sizeof(PtpSysOffset))
PTP_SYS_OFFSET_PRECISE = _ioc(_IOC_READ | _IOC_WRITE, "=", 8, ctypes.sizeof(PtpSysOffsetPrecise))
PTP_SYS_OFFSET_EXTENDED = _ioc(_IOC_READ | _IOC_WRITE, "=", 9, ctypes.sizeof(PtpSysOffsetExtended))
PPS_GETCAP = _ioc(_IOC_READ, "p", 0xA3, _PTR)
PPS_FETCH = _ioc(_IOC_READ | _IOC_WRITE, "p", 0xA4, _PTR)


def ioctl_numbers() -> Dict[str, int]:
    """The ioctl request numbers this backend uses (compare with the C headers in tests)."""
    return {
        "PTP_CLOCK_GETCAPS": PTP_CLOCK_GETCAPS,
        "PTP_SYS_OFFSET": PTP_SYS_OFFSET,
        "PTP_SYS_OFFSET_PRECISE": PTP_SYS_OFFSET_PRECISE,
        "PTP_SYS_OFFSET_EXTENDED": PTP_SYS_OFFSET_EXTENDED,
        "PPS_GETCAP": PPS_GETCAP,
        "PPS_FETCH": PPS_FETCH,
    }


def struct_sizes() -> Dict[str, int]:
    """sizeof() of the kernel structures this backend uses."""
    return {
        "ptp_clock_time": ctypes.sizeof(PtpClockTime),
        "ptp_clock_caps": ctypes.sizeof(PtpClockCaps),
        "ptp_sys_offset": ctypes.sizeof(PtpSysOffset),
        "ptp_sys_offset_extended": ctypes.sizeof(PtpSysOffsetExtended),
        "ptp_sys_offset_precise": ctypes.sizeof(PtpSysOffsetPrecise),
        "pps_ktime": ctypes.sizeof(PpsKtime),
        "pps_kinfo": ctypes.sizeof(PpsKinfo),
        "pps_fdata": ctypes.sizeof(PpsFdata),
        "timespec": _TIMESPEC_SIZE,
        "scm_timestamping": 3 * _TIMESPEC_SIZE,
        "sock_extended_err": _SOCK_EXTENDED_ERR.size,
    }


# --------------------------------------------------------------------------------------------------
# PTP hardware clocks and PPS devices


def _open_device(path: str, expected: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise clock_error(exc.errno or errno.ENODEV, path, expected) from exc


def ptp_time_ns(t: PtpClockTime) -> int:
    return int(t.sec) * _NS + int(t.nsec)


def best_basic_offset(stamps: List[int]) -> Correlation:
    """From PTP_SYS_OFFSET's [sys, phc, sys, phc, ..., sys] (ns): the narrowest sys bracket."""
    if len(stamps) < 3 or len(stamps) % 2 == 0:
        raise ValueError(f"expected 2n+1 interleaved stamps, got {len(stamps)}")
    triples = [(stamps[i], stamps[i + 1], stamps[i + 2]) for i in range(0, len(stamps) - 2, 2)]
    return best_extended_offset(triples)


def best_extended_offset(samples: List[Tuple[int, int, int]]) -> Correlation:
    """From [(sys_before, phc, sys_after)] (ns): the narrowest, as Correlation(ref=phc, sys=midpoint)."""
    if not samples:
        raise ValueError("no samples")
    before, phc, after = min(samples, key=lambda s: s[2] - s[0])
    width = after - before
    return Correlation(ref_ns=phc, sys_ns=before + width // 2, width_ns=width)


class PhcClock:
    """A PTP hardware clock /dev/ptpN (read-only use: never adjusts it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        expected = "a PTP hardware clock character device /dev/ptpN from a PTP-capable NIC driver"
        self._fd = _open_device(path, expected)
        caps = PtpClockCaps()
        try:
            fcntl.ioctl(self._fd, PTP_CLOCK_GETCAPS, caps)
        except OSError as exc:
            os.close(self._fd)
            self._fd = -1
            raise clock_error(exc.errno or errno.ENOTTY, path, expected) from exc
        self.cross_timestamping = bool(caps.cross_timestamping)
        self.clock_id = fd_to_clockid(self._fd)

    def read_ns(self) -> int:
        return clock_ns(self.clock_id)

    def sys_offset(self, samples: int = 5) -> Correlation:
        """PHC (ref) vs CLOCK_REALTIME (sys): PRECISE, else EXTENDED, else basic PTP_SYS_OFFSET."""
        samples = max(1, min(samples, PTP_MAX_SAMPLES))
        precise = PtpSysOffsetPrecise()
        try:
            fcntl.ioctl(self._fd, PTP_SYS_OFFSET_PRECISE, precise)
            return Correlation(ptp_time_ns(precise.device), ptp_time_ns(precise.sys_realtime), 0)
        except OSError:
            pass  # most drivers have no hardware cross-timestamping: try the next method
        extended = PtpSysOffsetExtended(n_samples=samples)
        try:
            fcntl.ioctl(self._fd, PTP_SYS_OFFSET_EXTENDED, extended)
            return best_extended_offset(
                [tuple(ptp_time_ns(t) for t in extended.ts[i]) for i in range(samples)]  # type: ignore[misc]
            )
        except OSError:
            pass
        basic = PtpSysOffset(n_samples=samples)
        try:
            fcntl.ioctl(self._fd, PTP_SYS_OFFSET, basic)
        except OSError as exc:
            raise clock_error(exc.errno or errno.EIO, self.path, "PTP_SYS_OFFSET support") from exc
        return best_basic_offset([ptp_time_ns(basic.ts[i]) for i in range(2 * samples + 1)])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PhcClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PpsEvent:
    """The latest assert/clear edges seen by a PPS device (None: no such edge yet)."""

    assert_ns: Optional[int]
    assert_seq: int
    clear_ns: Optional[int]
    clear_seq: int


def _pps_ns(t: PpsKtime) -> Optional[int]:
    if t.sec == 0 and t.nsec == 0:
        return None
    return int(t.sec) * _NS + int(t.nsec)


class PpsDevice:
    """An RFC 2783 PPS source /dev/ppsN, read with the PPS_FETCH ioctl."""

    def __init__(self, path: str) -> None:
        self.path = path
        expected = "an RFC 2783 PPS character device /dev/ppsN (pps-gpio, pps-ldisc)"
        self._fd = _open_device(path, expected)
        caps = ctypes.c_int(0)
        try:
            fcntl.ioctl(self._fd, PPS_GETCAP, caps)
        except OSError as exc:
            os.close(self._fd)
            self._fd = -1
            raise clock_error(exc.errno or errno.ENOTTY, path, expected) from exc
        self.capabilities = caps.value

    def fetch(self, timeout_s: float) -> PpsEvent:
        """Wait up to timeout_s for the next edge; PpsTimeout (a ClockError) if none comes."""
        if not 0.0 <= timeout_s <= 1e9:   # also NaN
            raise ValueError(f"timeout_s must be in [0, 1e9] seconds, got {timeout_s!r}")
        data = PpsFdata()
        whole = int(timeout_s)
        data.timeout.sec = whole
        data.timeout.nsec = round((timeout_s - whole) * _NS)
        try:
            fcntl.ioctl(self._fd, PPS_FETCH, data)
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT:
                raise PpsTimeout(errno.ETIMEDOUT, f"{self.path}: no PPS edge within {timeout_s} s") from exc
            raise clock_error(exc.errno or errno.EIO, self.path, "PPS_FETCH to succeed") from exc
        info = data.info
        return PpsEvent(
            assert_ns=_pps_ns(info.assert_tu),
            assert_seq=int(info.assert_sequence),
            clear_ns=_pps_ns(info.clear_tu),
            clear_seq=int(info.clear_sequence),
        )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PpsDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Timestamped UDP (SO_TIMESTAMPING / SO_TIMESTAMPNS); asm-generic option numbers (x86, arm, aarch64)

SO_TIMESTAMPNS_OLD = 35
SO_TIMESTAMPING_OLD = 37
SO_TIMESTAMPNS_NEW = 64
SO_TIMESTAMPING_NEW = 65

SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11

SO_EE_ORIGIN_TIMESTAMPING = 4
SCM_TSTAMP_SND = 0
IP_RECVERR = 11
IPV6_RECVERR = 25
SOL_IP = 0
SOL_IPV6 = 41

_LONG_SIZE = struct.calcsize("@l")
# 32-bit glibc may be built with 64-bit time_t (_TIME_BITS=64); ctypes knows which via c_time_t
# (3.12+); before that, assume time_t is long, true for every glibc ABI built without _TIME_BITS=64.
_TIME_T_SIZE = ctypes.sizeof(getattr(ctypes, "c_time_t", ctypes.c_long))
_TIMESPEC_SIZE = 16 if _TIME_T_SIZE == 8 else 8  # libc struct timespec: time_t + long, padded
_TS_OLD = struct.Struct("@ll")  # struct timespec with 'long' fields (the kernel's _OLD layout)
_TS_NEW = struct.Struct("@qq")  # struct __kernel_timespec
_SOCK_EXTENDED_ERR = struct.Struct("@IBBBBII")
_ANC_SIZE = 512
_ERRQUEUE_FLAGS = socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT


@dataclass(frozen=True)
class TimestampConfig:
    """What the kernel granted on a socket."""

    mode: str  # "timestamping", "timestampns" or "none"
    rx_software: bool  # kernel RX timestamps arrive with each datagram
    tx_software: bool  # kernel TX timestamps can be read with read_tx_timestamps
    flags: int  # SOF_TIMESTAMPING_* flags set (0 for timestampns/none)


@dataclass(frozen=True)
class TxTimestamp:
    """A kernel software TX timestamp; key counts datagrams sent since enabling (OPT_ID)."""

    realtime_ns: int
    key: int


def _option_order() -> Tuple[Tuple[int, int], ...]:
    # (SO_TIMESTAMPING, SO_TIMESTAMPNS) pairs to try; on 64-bit the OLD layout is already 64-bit.
    if _LONG_SIZE == 8:
        return ((SO_TIMESTAMPING_OLD, SO_TIMESTAMPNS_OLD),)
    return ((SO_TIMESTAMPING_NEW, SO_TIMESTAMPNS_NEW), (SO_TIMESTAMPING_OLD, SO_TIMESTAMPNS_OLD))


def enable_timestamps(sock: socket.socket, tx: bool = True) -> TimestampConfig:
    """Ask for software RX (and with tx, TX) kernel timestamps; report what was granted."""
    flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
    if tx:
        flags |= SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY
    for so_timestamping, so_timestampns in _option_order():
        try:
            sock.setsockopt(socket.SOL_SOCKET, so_timestamping, flags)
            return TimestampConfig("timestamping", True, tx, flags)
        except OSError:
            pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
            return TimestampConfig("timestampns", True, False, 0)
        except OSError:
            pass
    return TimestampConfig("none", False, False, 0)


def _timespec_ns(cmsg_type: int, data: bytes, index: int) -> Optional[int]:
    layout = _TS_NEW if cmsg_type in (SO_TIMESTAMPNS_NEW, SO_TIMESTAMPING_NEW) else _TS_OLD
    start = index * layout.size
    if len(data) < start + layout.size:
        return None
    sec, nsec = layout.unpack_from(data, start)
    if sec == 0 and nsec == 0:
        return None
    return int(sec) * _NS + int(nsec)


def socket_constants() -> Dict[str, int]:
    """The socket timestamping constants this backend uses (compare with the C headers in tests)."""
    return {
        "SO_TIMESTAMPNS_OLD": SO_TIMESTAMPNS_OLD,
        "SO_TIMESTAMPING_OLD": SO_TIMESTAMPING_OLD,
        "SO_TIMESTAMPNS_NEW": SO_TIMESTAMPNS_NEW,
        "SO_TIMESTAMPING_NEW": SO_TIMESTAMPING_NEW,
        "SOF_TIMESTAMPING_TX_SOFTWARE": SOF_TIMESTAMPING_TX_SOFTWARE,
        "SOF_TIMESTAMPING_RX_SOFTWARE": SOF_TIMESTAMPING_RX_SOFTWARE,
        "SOF_TIMESTAMPING_SOFTWARE": SOF_TIMESTAMPING_SOFTWARE,
        "SOF_TIMESTAMPING_OPT_ID": SOF_TIMESTAMPING_OPT_ID,
        "SOF_TIMESTAMPING_OPT_TSONLY": SOF_TIMESTAMPING_OPT_TSONLY,
        "SO_EE_ORIGIN_TIMESTAMPING": SO_EE_ORIGIN_TIMESTAMPING,
        "SCM_TSTAMP_SND": SCM_TSTAMP_SND,
    }


def software_timestamp(ancdata: List[Tuple[int, int, bytes]]) -> Optional[int]:
    """The kernel software timestamp (realtime ns) in recvmsg ancillary data, or None."""
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind in (SO_TIMESTAMPING_OLD, SO_TIMESTAMPING_NEW, SO_TIMESTAMPNS_OLD, SO_TIMESTAMPNS_NEW):
            return _timespec_ns(kind, data, 0)
    return None


def recv_timestamped(
    sock: socket.socket, bufsize: int = 65535
) -> Tuple[bytes, Tuple[Any, ...], Optional[int]]:
    """(data, address, kernel RX time as realtime ns or None). Non-blocking sockets raise BlockingIOError."""
    data, ancdata, _flags, address = sock.recvmsg(bufsize, _ANC_SIZE)
    return data, tuple(address) if address is not None else (), software_timestamp(ancdata)


def read_tx_timestamps(sock: socket.socket) -> List[TxTimestamp]:
    """Drain the socket's error queue (never blocks) and return the software TX timestamps in it."""
    timeout = sock.gettimeout()
    if timeout is None or timeout == 0.0:
        return _drain_errqueue(sock)
    # A socket in timeout mode would make recvmsg wait for POLLIN (which the error queue never raises)
    # until the timeout: read through a second, non-blocking socket object on the same descriptor.
    view = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    try:
        view.settimeout(0.0)  # the descriptor is already O_NONBLOCK: CPython sets it for timeout mode
        return _drain_errqueue(view)
    finally:
        view.detach()  # never close: the descriptor belongs to sock


def _drain_errqueue(sock: socket.socket) -> List[TxTimestamp]:
    found: List[TxTimestamp] = []
    while True:
        try:
            _data, ancdata, _flags, _addr = sock.recvmsg(1, _ANC_SIZE, _ERRQUEUE_FLAGS)
        except (BlockingIOError, InterruptedError):
            return found
        stamp = software_timestamp(ancdata)
        key: Optional[int] = None
        for level, kind, data in ancdata:
            if (level, kind) in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)) and len(data) >= 16:
                ee_errno, origin, _type, _code, _pad, info, ee_data = _SOCK_EXTENDED_ERR.unpack_from(data)
                is_tstamp = origin == SO_EE_ORIGIN_TIMESTAMPING and ee_errno == errno.ENOMSG
                if is_tstamp and info == SCM_TSTAMP_SND:
                    key = ee_data
        if stamp is not None and key is not None:
            found.append(TxTimestamp(realtime_ns=stamp, key=key))


def wait_tx_timestamps(sock: socket.socket, count: int, timeout_s: float) -> List[TxTimestamp]:
    """Collect at least `count` TX timestamps, waiting on POLLERR up to timeout_s in total."""
    deadline = time.monotonic() + timeout_s
    found = read_tx_timestamps(sock)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLERR)
    while len(found) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        poller.poll(max(1, int(left * 1000)))
        found.extend(read_tx_timestamps(sock))
    return found


# ------------------------------------------------------------------------------------------------
# stamped serial I/O (the Cython backend stamps next to the syscall with the GIL released)


def wait_readable_stamped(fd: int, wake_fd: int, timeout_ms: int, spin_until_ns: int = 0,
                          spin_from_ns: int = 0) -> tuple[int, int, int]:
    """poll() `fd` and `wake_fd` for input; (fd revents, wake_fd revents, raw ns at wake-up).

    From raw instant `spin_from_ns` (up to a millisecond sooner: poll's resolution) until
    `spin_until_ns` (0: not at all) it polls without sleeping, so the stamp is the arrival and not
    the arrival plus a wake-up; after that it sleeps for up to `timeout_ms`.
    OSError on a failed poll. `wake_fd` < 0 is ignored (as poll(2) does)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if wake_fd >= 0 and wake_fd != fd:
        poller.register(wake_fd, select.POLLIN)
    ready: list[tuple[int, int]] = []
    now = raw_ns()
    if spin_until_ns > now and spin_from_ns - now >= 1_000_000:
        ready = poller.poll((spin_from_ns - now) // 1_000_000)
    while not ready and raw_ns() < spin_until_ns:
        ready = poller.poll(0)
    if not ready:
        ready = poller.poll(timeout_ms)
    t = raw_ns()
    got = dict(ready)
    return got.get(fd, 0), got.get(wake_fd, 0) if wake_fd >= 0 else 0, t


def write_stamped(fd: int, data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """write(fd, data) once; (bytes written, raw ns just before the syscall). OSError on failure
    (BlockingIOError when a non-blocking fd is full)."""
    t = raw_ns()
    return os.write(fd, data), t


# ------------------------------------------------------------------------------------------------
# batched UDP (the Cython backend uses recvmmsg/sendmmsg; the results are the same)


Received = Tuple[bytes, Tuple[Any, ...], Optional[int]]   # (data, address, kernel RX realtime ns)


def recv_batch(fd: int, max_count: int = 32, bufsize: int = 2048) -> List[Received]:
    """Up to `max_count` datagrams from a non-blocking UDP socket: (data, address, kernel RX
    realtime ns or None) each, [] when none is waiting. Datagrams longer than `bufsize` are dropped."""
    sock = socket.socket(fileno=fd)
    out: List[Received] = []
    try:
        for _ in range(max(0, max_count)):
            try:
                data, ancdata, flags, address = sock.recvmsg(bufsize, _ANC_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if flags & socket.MSG_TRUNC:
                continue
            out.append((data, tuple(address) if address is not None else (), software_timestamp(ancdata)))
    finally:
        sock.detach()
    return out


def send_batch(fd: int, family: int, datagrams: List[bytes], addr: Tuple[Any, ...]) -> int:
    """Send `datagrams` to `addr`; how many the kernel took (-1: `addr` is not of `family`)."""
    sock = socket.socket(family, socket.SOCK_DGRAM, fileno=fd)
    sent = 0
    try:
        for data in datagrams:
            try:
                sock.sendto(data, socket.MSG_DONTWAIT, addr)
            except (BlockingIOError, InterruptedError):
                break
            except socket.gaierror:
                return -1
            sent += 1
    finally:
        sock.detach()
    return sent


def drain_tx_stamps(fd: int) -> List[Tuple[int, int]]:
    """Every software TX stamp in the socket's error queue: (OPT_ID key, realtime ns); never blocks."""
    sock = socket.socket(fileno=fd)
    try:
        sock.setblocking(False)
        return [(s.key, s.realtime_ns) for s in _drain_errqueue(sock)]
    finally:
        sock.detach()
