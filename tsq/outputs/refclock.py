"""Feed chronyd through its SOCK refclock (`refclock SOCK /path/tsq.sock refid TSQ`).

chronyd binds a datagram Unix socket at the path and reads `struct sock_sample` (refclock_sock.c):

    struct sock_sample {
      struct timeval tv;   /* system time (CLOCK_REALTIME) of the measurement */
      double offset;       /* true time - system time at tv, seconds */
      int pulse;           /* 0: a full time sample (not a PPS edge) */
      int leap;            /* 0 normal, 1 insert, 2 delete */
      int _pad;
      int magic;           /* 0x534f434b "SOCK" */
    };

chronyd drops any datagram whose length is not `sizeof(struct sock_sample)` of ITS build, so the
layout must be the C layout of chronyd's ABI, which is the layout of `struct timeval` there:

    ABI                                      timeval  offset@  sizeof
    x86-64, arm64 (LP64)                     16       16       40
    armhf/i386 with 64-bit time_t (Debian    16       16       40   (tv_usec is 64-bit too)
      13+ armhf, _TIME_BITS=64)
    armhf with 32-bit time_t (Raspberry Pi   8        8        32
      OS bookworm and older), i386 legacy

`time_bits="auto"` takes 64 on LP64 and otherwise looks at the chronyd binary for glibc's 64-bit
time symbols (`__clock_gettime64`); give 32 or 64 explicitly when that guess is wrong.
The `double` is 8-byte aligned on every ABI above (i386 aligns it to 4, but it falls on 8 anyway).
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass
from typing import Optional, Protocol, Type

SOCK_MAGIC = 0x534F434B
CHRONYD_PATHS = ("/usr/sbin/chronyd", "/usr/local/sbin/chronyd", "/sbin/chronyd")


class RefclockError(OSError):
    """The chrony SOCK refclock cannot be fed; the message names the socket path."""


class _Model(Protocol):
    def utc_ns(self, raw_ns: int) -> Optional[int]: ...
    def leap(self) -> int: ...


def _structure(time_bits: int) -> Type[ctypes.Structure]:
    # tv_sec and tv_usec are both 32-bit with a 32-bit time_t (`long` on ILP32), both 64-bit with a
    # 64-bit time_t (LP64 `long`, or glibc's _TIME_BITS=64 on ILP32 where tv_usec widens too).
    word = ctypes.c_int32 if time_bits == 32 else ctypes.c_int64

    class Timeval(ctypes.Structure):
        _fields_ = [("tv_sec", word), ("tv_usec", word)]

    class SockSample(ctypes.Structure):
        _fields_ = [
            ("tv", Timeval),
            ("offset", ctypes.c_double),
            ("pulse", ctypes.c_int),
            ("leap", ctypes.c_int),
            ("_pad", ctypes.c_int),
            ("magic", ctypes.c_int),
        ]

    return SockSample


def detect_time_bits(chronyd: Optional[str] = None) -> int:
    """64 on LP64 platforms; on 32-bit ones 64 when chronyd links glibc's *_time64 symbols, else 32."""
    if ctypes.sizeof(ctypes.c_long) == 8:
        return 64
    for path in ([chronyd] if chronyd else list(CHRONYD_PATHS)):
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
        except OSError:
            continue
        return 64 if b"__clock_gettime64" in blob or b"_time64" in blob else 32
    return 32


def sample_size(time_bits: int) -> int:
    """sizeof(struct sock_sample) for a chronyd built with `time_bits`-bit time_t."""
    return ctypes.sizeof(_structure(time_bits))


def encode_sample(realtime_ns: int, offset_s: float, leap: int = 0, time_bits: int = 64) -> bytes:
    """One sock_sample: system time `realtime_ns`, offset (true - system) in seconds, leap 0/1/2.

    `leap` 3 (unknown) is sent as 0: chrony has no "unknown" here and its own leap handling applies.
    """
    if time_bits not in (32, 64):
        raise ValueError(f"time_bits must be 32 or 64, not {time_bits}")
    sec, nsec = divmod(realtime_ns, 1_000_000_000)
    if time_bits == 32 and not -(2**31) <= sec < 2**31:
        raise ValueError("time beyond 2038 cannot be sent to a chronyd with 32-bit time_t")
    s = _structure(time_bits)()
    s.tv.tv_sec = sec
    s.tv.tv_usec = nsec // 1000
    # tv keeps whole microseconds; the offset (true - system) is the same at the truncated instant.
    s.offset = offset_s
    s.pulse = 0
    s.leap = leap if leap in (0, 1, 2) else 0
    s._pad = 0
    s.magic = SOCK_MAGIC
    return bytes(s)


@dataclass(frozen=True)
class DecodedSample:
    realtime_ns: int
    offset_s: float
    pulse: int
    leap: int
    magic: int


def decode_sample(data: bytes, time_bits: int = 64) -> DecodedSample:
    """Inverse of encode_sample (for tests and tools). Raises ValueError on a wrong length/magic."""
    cls = _structure(time_bits)
    if len(data) != ctypes.sizeof(cls):
        raise ValueError(f"sock_sample is {ctypes.sizeof(cls)} bytes, got {len(data)}")
    s = cls.from_buffer_copy(data)
    if s.magic != SOCK_MAGIC:
        raise ValueError(f"bad magic {s.magic:#x}")
    return DecodedSample(s.tv.tv_sec * 1_000_000_000 + s.tv.tv_usec * 1000, s.offset, s.pulse, s.leap,
                         s.magic)


class RefclockOutput:
    """Sends samples of a TimeModel to chronyd's SOCK refclock socket.

    `send()` is called by the runner about once a second; chronyd filters the samples itself.
    Until chronyd is running (its socket absent or refusing) samples are dropped and counted.
    """

    def __init__(self, path: str, time_bits: int | str = "auto") -> None:
        self.path = path
        self.time_bits = detect_time_bits() if time_bits == "auto" else int(time_bits)
        if self.time_bits not in (32, 64):
            raise ValueError(f"time_bits must be 32, 64 or 'auto', not {time_bits!r}")
        self.sent = 0
        self.dropped = 0
        self.last_error: Optional[str] = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send_offset(self, realtime_ns: int, offset_s: float, leap: int = 0) -> bool:
        """Send one sample; False (and counted) when chronyd is not there or its queue is full."""
        data = encode_sample(realtime_ns, offset_s, leap, self.time_bits)
        try:
            self._sock.sendto(data, self.path)
        except (FileNotFoundError, ConnectionRefusedError, BlockingIOError, PermissionError) as exc:
            self.dropped += 1
            self.last_error = f"{self.path}: {exc.strerror or exc}"
            return False
        self.sent += 1
        self.last_error = None
        return True

    def send(self, model: _Model, raw_ns: int, realtime_ns: int) -> bool:
        """Sample the model at one instant read on both clocks (raw_ns and realtime_ns together).

        Nothing is sent while the model has no UTC (unsynchronised).
        """
        utc = model.utc_ns(raw_ns)
        if utc is None:
            return False
        return self.send_offset(realtime_ns, (utc - realtime_ns) / 1e9, model.leap())

    def close(self) -> None:
        self._sock.close()


def socket_exists(path: str) -> bool:
    """Whether chronyd's socket is there (for a friendly startup message)."""
    try:
        import stat

        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
