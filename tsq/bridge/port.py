"""Serial port lifecycle for the bridge: open, stamped reads and writes, hot-plug with backoff.

pyserial opens and configures the port (baud, 8N1, raw mode, exclusive lock); after that the bridge
works on the file descriptor itself. A reader thread per port blocks in poll() and stamps the raw
clock the moment bytes are readable (T4 is "when the bytes arrived", not "when the event loop got
round to them"), then hands (bytes, raw ns) to the event loop. Asked to (`PortLink.send(reply_window=
...)`, the bridge's `--reply-spin-ms`), it polls without sleeping around when a PONG is due, so T4
does not carry the scheduler's wake-up either. Writes go out from a single-thread
executor per port: stamp (T1) and write, then `tcdrain` until the last byte left the UART. Both
stamps are taken next to the syscall by `tsq.clock` (in C with the GIL released on the Cython
backend), so a thread never stamps late because another held the GIL.

A port that vanishes (EIO, hang-up, the device node gone) is closed and reopened with exponential
backoff, forever: unplugging a USB adapter is a normal event, not an error. A port that cannot be
opened says why (`tsq.bridge.portinfo.diagnose`: missing, permission, not a tty, busy) in the status
and once per distinct reason in the log; after each open the link is identified from sysfs and
asked for low latency (`portinfo.set_low_latency`), and the outcome is said the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import termios
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import serial

from tsq import clock
from tsq.bridge import portinfo
from tsq.bridge.links import LinkProfile
from tsq.bridge.portinfo import OpenProblem, PortInfo
from tsq.bridge.status import PortStatus
from tsq.clock import raw_ns

log = logging.getLogger("tsq.bridge")

QUIET_AFTER_WRITE_NS = 1_000_000   # see SerialPort.write_stamped
REPLY_SPIN_START_S = 0.001         # PortLink.send waits at most this for its reader to spin


def _noop() -> None:
    pass


class PortGone(OSError):
    """The port closed under us (unplugged, hung up, the device node vanished)."""


class PortError(PortGone):
    """The port cannot be opened; `problem` has the errno, a one-line reason and a hint."""

    def __init__(self, problem: OpenProblem) -> None:
        super().__init__(problem.errno, str(problem))
        self.problem = problem


def _errno_of(exc: BaseException) -> int:
    """The errno behind a pyserial exception: its own, or that of the error it wraps (pyserial's
    "Could not configure port" carries the termios.error of a file that is not a tty, no errno)."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        err = getattr(seen, "errno", None)
        if isinstance(err, int):
            return err
        args = getattr(seen, "args", ())
        if isinstance(seen, termios.error) and args and isinstance(args[0], int):
            return int(args[0])
        seen = seen.__cause__ or seen.__context__
    return errno.EIO


class SerialPort:
    """One open serial port. Blocking-free: reads are non-blocking, writes drain in the caller's thread."""

    def __init__(self, path: str, baud: int = 115200, sysfs_root: str = portinfo.SYSFS,
                 by_id_dir: str = portinfo.BY_ID_DIR) -> None:
        self.path = path
        self.baud = baud
        self.sysfs_root = sysfs_root
        self.by_id_dir = by_id_dir
        self._serial: Optional[Any] = None
        self.fd = -1
        self.info: Optional[PortInfo] = None
        self.low_latency: Optional[str] = None

    def open(self) -> None:
        """Open, configure, ask for low latency; PortError (reason and hint) when it cannot be opened."""
        problem = portinfo.not_a_tty(self.path)
        if problem is not None:
            raise PortError(problem)
        try:
            ser = serial.Serial(
                self.path, baudrate=self.baud, bytesize=8, parity="N", stopbits=1,
                timeout=0, write_timeout=None, xonxoff=False, rtscts=False, exclusive=True,
            )
        except (serial.SerialException, OSError) as exc:
            raise PortError(portinfo.diagnose(self.path, _errno_of(exc), self.by_id_dir)) from exc
        self._serial = ser
        self.fd = ser.fileno()
        os.set_blocking(self.fd, False)
        self.info = portinfo.resolve(self.path, self.sysfs_root)
        self.low_latency = portinfo.set_low_latency(self.fd, self.info)

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def read_available(self, max_bytes: int = 4096) -> bytes:
        """Whatever is buffered now (possibly b''); PortGone on hang-up or a vanished device."""
        try:
            data = os.read(self.fd, max_bytes)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise PortGone(exc.errno, f"{self.path}: {exc.strerror}") from exc
        if not data:
            # A tty in non-blocking mode reads EAGAIN when idle; an empty read is a hang-up.
            raise PortGone(errno.EIO, f"{self.path}: hang-up")
        return data

    def write_stamped(self, data: bytes) -> int:
        """Write all of `data` and wait until it left; returns T1, the raw ns just before the first
        byte was handed to the kernel. PROTOCOL.md stamps the first byte out on both sides, so each
        leg of a ping covers one equal-length frame's serialisation; the TX queue is empty here
        (one writer thread, drained after every frame), so the first byte leaves at once."""
        t1: Optional[int] = None
        view = memoryview(data)
        while view:
            try:
                n, stamp = clock.write_stamped(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.1)
                continue
            except OSError as exc:
                raise PortGone(exc.errno, f"{self.path}: {exc.strerror}") from exc
            if t1 is None:
                t1 = stamp
            view = view[n:]
        if t1 is not None:
            # Stay off the CPU for a moment, at once: the bridge's own work after a write (returning
            # the stamp, waking the event loop, even tcdrain's return to Python) would otherwise
            # delay whatever must run to carry the frame to the device and answer it (the pty's and
            # the USB driver's kernel work, a host-simulated device), on the forward leg only.
            # Measured on a 2-core VM with the posix firmware: ~30 µs at the minimum with no pause
            # (a -17 µs bias on the device); -4 to -5 µs with the pause after tcdrain; +0.8 µs with
            # it before. Writes are a few per second, so this costs nothing.
            left = QUIET_AFTER_WRITE_NS - (raw_ns() - t1)
            if left > 0:
                time.sleep(left / 1e9)
        try:
            termios.tcdrain(self.fd)
        except termios.error as exc:
            raise PortGone(errno.EIO, f"{self.path}: tcdrain failed: {exc}") from exc
        return raw_ns() if t1 is None else t1

    def write_at(self, data: bytes, raw_target_ns: int) -> int:
        """Write `data` so its first byte leaves at raw instant `raw_target_ns`; returns the start stamp.

        Sleeps to within a millisecond of the target, then spins: the thread is a writer thread, and
        a millisecond of spinning per second is the price of starting on time.
        """
        while True:
            left = raw_target_ns - raw_ns()
            if left <= 0:
                break
            if left > 1_500_000:
                time.sleep((left - 1_000_000) / 1e9)
        return self.write_stamped(data)

    def close(self) -> None:
        ser, self._serial, self.fd = self._serial, None, -1
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()


class Backoff:
    """Exponential retry delay: `initial`, doubling up to `maximum`, reset after a success."""

    def __init__(self, initial_s: float = 0.1, maximum_s: float = 5.0) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self._next = initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


DataCallback = Callable[[bytes, int], None]


class PortLink:
    """Keeps one serial path open across unplug/replug and feeds stamped bytes to the event loop.

    Callbacks run on the event loop thread: `on_open()` after each successful open,
    `on_data(bytes, t4_raw_ns)` for every read, `on_close(reason)` when the port went away.
    `link` is the link profile's name or "auto" (detected at each open: `portinfo.link_for`).
    """

    def __init__(
        self,
        path: str,
        baud: int,
        on_data: DataCallback,
        on_open: Callable[[], None] = lambda: None,
        on_close: Callable[[str], None] = lambda reason: None,
        backoff: Optional[Backoff] = None,
        link: str = "auto",
        sysfs_root: str = portinfo.SYSFS,
        by_id_dir: str = portinfo.BY_ID_DIR,
    ) -> None:
        self.path = path
        self.baud = baud
        self.link = link
        self.sysfs_root = sysfs_root
        self.by_id_dir = by_id_dir
        self.info: Optional[PortInfo] = None
        self.profile: Optional[LinkProfile] = None     # the link in use, set at each open
        self.low_latency: Optional[str] = None
        self.problem: Optional[OpenProblem] = None     # why the last open failed, until one succeeds
        self._logged: Optional[tuple[int, str]] = None
        self.on_data = on_data
        self.on_open = on_open
        self.on_close = on_close
        self.backoff = backoff or Backoff()
        self.port: Optional[SerialPort] = None
        self.opens = 0
        self.open_failures = 0
        self.last_error = ""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tsq-write {path}")
        self._connected = asyncio.Event()
        self._stopping = False
        # The reply window (see `send`): the reader polls without sleeping between these raw instants.
        self._spin_ns = (0, 0)
        self._spinning = threading.Event()
        self._wake_w = -1

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def run(self) -> None:
        """Open, read until the port goes, reopen with backoff; until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                port = SerialPort(self.path, self.baud, self.sysfs_root, self.by_id_dir)
                try:
                    port.open()
                except OSError as exc:
                    self._open_failed(exc)
                    await asyncio.sleep(self.backoff.next_delay())
                    continue
                self.backoff.reset()
                self.opens += 1
                self._opened(port)
                gone: asyncio.Future[str] = loop.create_future()
                wake_r, wake_w = os.pipe()
                reader = threading.Thread(
                    target=self._read_loop, args=(loop, port, gone, wake_r),
                    name=f"tsq-read {self.path}", daemon=True,
                )
                self.port = port
                self._wake_w = wake_w
                self._connected.set()
                reader.start()
                self.on_open()
                try:
                    reason = await gone
                finally:
                    self._connected.clear()
                    self.port = None
                    self._wake_w = -1
                    os.write(wake_w, b"x")
                    await loop.run_in_executor(None, reader.join, 2.0)
                    # Let a write in flight finish before the fd number can be reused.
                    await loop.run_in_executor(self._writer, _noop)
                    os.close(wake_r)
                    os.close(wake_w)
                    port.close()
                self.last_error = reason
                log.warning("%s: lost (%s)", self.path, reason.replace(f"{self.path}: ", "", 1))
                self.on_close(reason)
                # A port that opens and dies at once must not spin: back off before reopening.
                await asyncio.sleep(self.backoff.next_delay())
        finally:
            self._writer.shutdown(wait=False)

    def _open_failed(self, exc: OSError) -> None:
        problem = (exc.problem if isinstance(exc, PortError)
                   else portinfo.diagnose(self.path, exc.errno or errno.EIO, self.by_id_dir))
        self.open_failures += 1
        self.problem = problem
        self.last_error = str(problem)
        key = (problem.errno, problem.reason)
        if key != self._logged:
            # Once per distinct reason: a port retried every few seconds for hours must not flood.
            self._logged = key
            log.warning("%s (will retry)", problem)

    def _opened(self, port: SerialPort) -> None:
        self.problem = None
        self._logged = None
        self.info = port.info
        self.low_latency = port.low_latency
        info = port.info if port.info is not None else portinfo.resolve(self.path, self.sysfs_root)
        self.profile = portinfo.link_for(self.link, info)
        via = "" if info.real_path == self.path else f" ({info.real_path})"
        how = (f"detected: {info.describe()}" if self.link == "auto"
               else f"as given; detected: {info.describe()}")
        log.info("%s%s: opened at %d baud, link %s (%s), low latency %s", self.path, via, self.baud,
                 self.profile.name, how, self.low_latency)

    def port_status(self) -> PortStatus:
        """The port's part of a device's status: link, low latency, why it cannot be opened."""
        return PortStatus(
            link=None if self.profile is None else self.profile.name, low_latency=self.low_latency,
            port_error=None if self.problem is None else self.problem.reason,
            port_hint=None if self.problem is None or not self.problem.hint else self.problem.hint)

    def _read_loop(
        self, loop: asyncio.AbstractEventLoop, port: SerialPort, gone: asyncio.Future[str], wake_r: int
    ) -> None:
        """Reader thread: stamp raw ns as soon as the fd is readable, then pass the bytes on."""

        def finish(reason: str) -> None:
            if not gone.done():
                gone.set_result(reason)

        while True:
            # A window already over needs no clearing: the poll spins only while it is still ahead.
            # (Clearing it here raced with `_write`: a window set while this thread slept was wiped.)
            spin_from, spin_until = self._spin_ns
            if spin_until > raw_ns():
                self._spinning.set()
            try:
                # Stamped in C as poll() returns, before this thread needs the GIL again.
                port_events, wake_events, t4 = clock.wait_readable_stamped(port.fd, wake_r, 1000, spin_until,
                                                                           spin_from)
            except (OSError, ValueError) as exc:
                loop.call_soon_threadsafe(finish, f"poll failed: {exc}")
                return
            if wake_events:
                # "x": the port is being closed; "s": a reply window opened (`send`).
                if b"x" in os.read(wake_r, 64) or self.port is not port:
                    return
                continue
            if not port_events:
                if not os.path.exists(self.path):
                    loop.call_soon_threadsafe(finish, "device node vanished")
                    return
                continue
            try:
                data = port.read_available()
            except PortGone as exc:
                loop.call_soon_threadsafe(finish, exc.strerror or str(exc))
                return
            if data:
                loop.call_soon_threadsafe(self._deliver, data, t4)

    def _deliver(self, data: bytes, t4: int) -> None:
        try:
            self.on_data(data, t4)
        except Exception as exc:  # a consumer bug must not kill the port; it is reported via on_close
            self.last_error = f"consumer error: {exc!r}"
            raise

    async def send(self, data: bytes, reply_window: Optional[tuple[int, int]] = None) -> Optional[int]:
        """Write a frame; returns T1 (raw ns after the last byte left) or None if the port is down.

        With `reply_window` (start, end ns after the write), the reader thread polls without
        sleeping in that window: a reply that arrives in it is stamped on arrival, not a scheduler
        wake-up later (tens of µs on an idle CPU, and on the back leg only)."""
        port = self.port
        if port is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, self._write, port, data, reply_window)
        except OSError as exc:
            self.last_error = str(exc)
            return None

    def _write(self, port: SerialPort, data: bytes, reply_window: Optional[tuple[int, int]]) -> int:
        wake_w = self._wake_w
        if reply_window is not None and wake_w >= 0:
            self._spinning.clear()
            now = raw_ns()
            self._spin_ns = (now + reply_window[0], now + reply_window[1])
            os.write(wake_w, b"s")
            # The reader is spinning before the frame goes out (or it woke late: then it simply
            # stamps as it would have without the window).
            self._spinning.wait(REPLY_SPIN_START_S)
        return port.write_stamped(data)

    async def send_at(self, data: bytes, raw_target_ns: int) -> Optional[int]:
        """Write `data` starting at raw instant `raw_target_ns`; returns the start stamp or None."""
        port = self.port
        if port is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, port.write_at, data, raw_target_ns)
        except OSError as exc:
            self.last_error = str(exc)
            return None

    def stop(self) -> None:
        self._stopping = True
