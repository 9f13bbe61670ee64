"""Clocks, NTP 64-bit timestamps, PHC/PPS devices and kernel-timestamped UDP: the one clock API.

The backend is `tsq._fastclock` (Cython) when it is built and importable, else `tsq._pyclock`
(pure Python); `TSQ_PURE_PYTHON=1` forces the latter. `BACKEND` says which is in use. Both expose the
same functions; the shared types (`ClockError`, `Correlation`, `PpsEvent`, `TimestampConfig`,
`TxTimestamp`) always come from `tsq._pyclock`, so `except ClockError` works whatever the backend.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, Tuple

from tsq._kerneltime import (
    KernelClockStatus,
    Timex,
    adjtimex_function,
    leap_from_status,
    read_kernel_status,
)
from tsq._pyclock import (
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_MONOTONIC_RAW,
    CLOCK_REALTIME,
    CLOCK_TAI,
    NTP_UNIX_OFFSET_S,
    ClockError,
    Correlation,
    PpsEvent,
    PpsTimeout,
    TimestampConfig,
    TxTimestamp,
    enable_timestamps,
    fd_to_clockid,
    read_tx_timestamps,
    realtime_to_raw,
    recv_timestamped,
    wait_tx_timestamps,
)

# The functions each backend implements, listed once: the type checker reads their signatures from
# the pure-Python twin, and at run time they are taken from whichever backend loads.
if TYPE_CHECKING:
    from tsq._pyclock import (
        PhcClock,
        PpsDevice,
        RealtimeToRaw,
        clock_ns,
        correlate,
        drain_tx_stamps,
        ioctl_numbers,
        ntp64_to_unix_ns,
        raw_ns,
        read_ntp64,
        realtime_ns,
        recv_batch,
        send_batch,
        socket_constants,
        stamp_ntp64,
        struct_sizes,
        tai_ns,
        unix_ns_to_ntp64,
        wait_readable_stamped,
        write_ntp64,
        write_stamped,
    )

_BACKEND_API = (
    "PhcClock", "PpsDevice", "RealtimeToRaw", "clock_ns", "correlate", "drain_tx_stamps", "ioctl_numbers",
    "ntp64_to_unix_ns", "raw_ns", "read_ntp64", "realtime_ns", "recv_batch", "send_batch",
    "socket_constants", "stamp_ntp64", "struct_sizes", "tai_ns", "unix_ns_to_ntp64",
    "wait_readable_stamped", "write_ntp64", "write_stamped",
)


def _load_backend() -> Tuple[ModuleType, str]:
    if os.environ.get("TSQ_PURE_PYTHON", "") not in ("", "0"):
        return importlib.import_module("tsq._pyclock"), "python"
    try:
        return importlib.import_module("tsq._fastclock"), "cython"
    except ImportError:
        return importlib.import_module("tsq._pyclock"), "python"


_backend, BACKEND = _load_backend()
globals().update({name: getattr(_backend, name) for name in _BACKEND_API})

__all__ = [
    "BACKEND",
    "CLOCK_BOOTTIME",
    "CLOCK_MONOTONIC",
    "CLOCK_MONOTONIC_RAW",
    "CLOCK_REALTIME",
    "CLOCK_TAI",
    "NTP_UNIX_OFFSET_S",
    "ClockError",
    "Correlation",
    "KernelClockStatus",
    "PhcClock",
    "PpsDevice",
    "PpsEvent",
    "PpsTimeout",
    "RealtimeToRaw",
    "TimestampConfig",
    "Timex",
    "TxTimestamp",
    "adjtimex_function",
    "clock_ns",
    "correlate",
    "drain_tx_stamps",
    "enable_timestamps",
    "fd_to_clockid",
    "ioctl_numbers",
    "leap_from_status",
    "ntp64_to_unix_ns",
    "raw_ns",
    "raw_realtime",
    "read_kernel_status",
    "read_ntp64",
    "read_tx_timestamps",
    "realtime_ns",
    "realtime_to_raw",
    "recv_batch",
    "recv_timestamped",
    "send_batch",
    "socket_constants",
    "stamp_ntp64",
    "struct_sizes",
    "tai_ns",
    "unix_ns_to_ntp64",
    "wait_readable_stamped",
    "wait_tx_timestamps",
    "write_ntp64",
    "write_stamped",
]


def raw_realtime() -> Correlation:
    """CLOCK_MONOTONIC_RAW (`ref_ns`) and CLOCK_REALTIME (`sys_ns`) at one instant, the narrowest of
    3 brackets: what the gateway's status, logs and host-clock model read together."""
    return correlate(CLOCK_MONOTONIC_RAW, CLOCK_REALTIME, tries=3)
