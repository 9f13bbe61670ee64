"""A Python STAND-IN for the device firmware, speaking the real serial protocol (tsq.bridge.frames).

The demo uses it where the C firmware's host build (firmware-bridge/ports/posix) cannot be built
(no C compiler); tests use it to run the bridge's side end to end over real pseudo-terminals. Its tick
counter is CLOCK_MONOTONIC_RAW skewed by `ppm`; since it runs on the host, it knows its true error:
its own UTC (the last TIMESCALE applied in integers, as firmware would) minus CLOCK_REALTIME.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from typing import Optional

from tsq.bridge import frames

TICK_HZ = 10_000_000


class StandInDevice(threading.Thread):
    """Serves the device side of a pty from its master fd `master`."""

    def __init__(self, master: int, device_id: int, ppm: float, slave: Optional[int] = None) -> None:
        super().__init__(daemon=True, name=f"standin-device-{device_id:x}")
        self.master, self.device_id, self.ppm = master, device_id, ppm
        self.slave = slave
        self.path = os.ttyname(slave) if slave is not None else ""
        self.epoch = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW) - 12_345_678
        self.timescale: Optional[frames.TimescaleMsg] = None
        self.errors: list[tuple[int, int]] = []   # (true error ns, bound ns) at each TIMESCALE
        self.stop = threading.Event()
        self.garbage = b""
        self.seq = 0

    @classmethod
    def on_new_pty(cls, device_id: int, ppm: float) -> StandInDevice:
        """A device on a fresh pty; the bridge opens `.path`. The slave fd stays open here, since a
        pty master reads EIO while no slave is open."""
        master, slave = os.openpty()
        return cls(master, device_id, ppm, slave)

    def ticks(self) -> int:
        raw = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW) - self.epoch
        return raw * TICK_HZ * (1_000_000 + round(self.ppm)) // 1_000_000 // 1_000_000_000

    def utc_ns(self) -> Optional[int]:
        """The device's own idea of UTC now (None before its first TIMESCALE)."""
        ts = self.timescale
        return None if ts is None else frames.apply_timescale(ts, self.ticks())

    def true_error_ns(self) -> Optional[int]:
        """Device UTC minus CLOCK_REALTIME, read around it."""
        a = time.time_ns()
        mine = self.utc_ns()
        b = time.time_ns()
        return None if mine is None else mine - (a + b) // 2

    def hello(self) -> bytes:
        self.seq += 1
        return frames.encode(frames.Hello(self.seq, self.device_id, (0, 1, 0), 1, TICK_HZ, 0))

    def reset(self) -> None:
        """What a device reboot looks like to the bridge: ticks restart, a new HELLO."""
        self.epoch = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        self.timescale = None
        os.write(self.master, self.hello())

    def run(self) -> None:
        decoder = frames.StreamDecoder()
        while not self.stop.is_set():
            try:
                r, _, _ = select.select([self.master], [], [], 0.1)
                if not r:
                    continue
                t2 = self.ticks()
                data = os.read(self.master, 4096)
            except OSError:
                return
            for msg in decoder.feed(data):
                with contextlib.suppress(OSError):
                    self._handle(msg, t2)

    def _handle(self, msg: frames.Message, t2: int) -> None:
        if isinstance(msg, frames.HelloRequest):
            os.write(self.master, self.hello())
        elif isinstance(msg, frames.Ping):
            if self.garbage:
                os.write(self.master, self.garbage)
                self.garbage = b""
            os.write(self.master, frames.encode(frames.Pong(msg.seq, t2, self.ticks())))
        elif isinstance(msg, frames.TimescaleMsg):
            self.timescale = msg
            err = self.true_error_ns()
            if err is not None:
                self.errors.append((err, msg.bound_ns))

    def close(self) -> None:
        self.stop.set()
        self.join(2)
        for fd in (self.master, self.slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
