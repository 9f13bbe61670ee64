"""The firmware on emulated MCUs (tests marked `mcu_emulated`, run by `tox -e mcu`).

`make -C firmware-bridge emu` builds the Cortex-M0 image for QEMU's `microbit` machine and the
ATmega328P image for simavr (with its harness). Each emulator's UART is a pseudo-terminal behind a
symlink (`.path`, what the bridge opens, as it would /dev/ttyUSB0); each firmware prints a debug
line once a second (PROTOCOL.md, "Debug line": its tick, state, its own UTC and bound, counters),
which the emulator object reads from the emulator's stdout and stamps with CLOCK_REALTIME and
CLOCK_MONOTONIC on arrival.

The time the devices are given is CLOCK_MONOTONIC plus a whole number of seconds (SERVED_EPOCH_NS,
near today), not CLOCK_REALTIME: both emulators keep CLOCK_MONOTONIC, and a VM's wall clock can be
stepped against it (seen in CI: CLOCK_REALTIME gaining 5 ms a second on CLOCK_MONOTONIC for two
minutes), which puts a realtime timescale 5000 ppm off the device's ticks -- beyond the ±1000 ppm a
device accepts. In-process the bridge's model is SystemClockModel on CLOCK_MONOTONIC; through the
command line, `tsq server --clock monotonic --clock-offset SERVED_EPOCH_S`.

How emulated time relates to host time (why the UTC checks carry an allowance):
- QEMU runs without -icount, so the guest's SysTick is computed from QEMU's virtual clock, which is
  the host's monotonic clock while the VM runs: the device's crystal is exact, but interrupts are
  taken only between translated blocks and the debug line reaches us through a pipe and a thread,
  so what we read lags what the device computed by up to a few ms on a loaded machine.
- simavr runs instructions as fast as it can; the harness sleeps whenever simulated time
  (cycles / 16 MHz) is ahead of the host's, so on average the MCU keeps real time, but whenever the
  host is slow it falls behind. The harness appends `simlag_ns` to each line: how far behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import pytest

T = TypeVar("T")
FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware-bridge"
# What placing a line's utc= in host time may still be off by: QEMU, the least read latency of the
# lines seen (the constant is fixed by the earliest-arriving line: tens of µs to a ms on a loaded
# machine); simavr, Timer1 starting a few µs after reset. simavr's lag spread comes on top.
READ_ALLOWANCE_NS = 2_000_000
SERVED_EPOCH_S = (time.time_ns() - time.monotonic_ns()) // 10**9
SERVED_EPOCH_NS = SERVED_EPOCH_S * 10**9   # served time = CLOCK_MONOTONIC + this (see above)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    # The emulators take minutes: they run in their own tox env (`tox -e mcu`, `-m mcu_emulated`),
    # not again inside every other env that collects the whole tree.
    if "mcu_emulated" in (config.getoption("markexpr") or "") or os.environ.get("TSQ_MCU_EMULATED") == "1":
        return
    skip = pytest.mark.skip(
        reason="emulated-MCU lane: run `tox -e mcu` or `pytest -m mcu_emulated tests/firmware`")
    for item in items:
        if "mcu_emulated" in item.keywords:
            item.add_marker(skip)


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = (f"missing {', '.join(missing)} (apt-get install qemu-system-arm simavr libsimavr-dev "
               "gcc-arm-none-eabi gcc-avr avr-libc)")
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs them (.ci/run): missing there is a broken setup, not a skip
        pytest.skip(msg)


_built: dict[str, Path] = {}


def build_emu() -> Path:
    """`make emu` once per session; returns the build directory."""
    if "dir" not in _built:
        _need("make", "cc", "arm-none-eabi-gcc", "avr-gcc")
        out = FIRMWARE_DIR / "build"
        proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "emu"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"make emu failed:\n{proc.stdout}{proc.stderr}")
        _built["dir"] = out / "emu"
    return _built["dir"]


@dataclass(frozen=True)
class DebugLine:
    host_ns: int            # CLOCK_REALTIME when the line was read
    tick: int
    state: int              # 0 unsynchronised, 1 synchronised, 2 holdover
    utc_ns: Optional[int]   # the device's own UTC at `tick`
    bound_ns: Optional[int]
    ts_seq: int
    bad: int
    overruns: int
    rejected: int
    err: int
    rx_in_tx: int           # RX interrupts taken while the main loop was writing a frame
    rx_in_status: int       # ... while that frame was a STATUS
    simlag_ns: int          # simavr only: simulated time behind real time (0 for QEMU)
    mono_ns: Optional[int] = None   # CLOCK_MONOTONIC: QEMU, when the stamper read the line; simavr,
                                    # when the harness printed it
    sim_ns: Optional[int] = None    # simavr: simulated time since reset as the line ended
    simlag_min_ns: int = 0          # simavr: the range of simlag since the previous line
    simlag_max_ns: int = 0

    @property
    def error_ns(self) -> Optional[int]:
        return None if self.utc_ns is None else self.utc_ns - self.host_ns


_LINE = re.compile(r"TSQB tick=(\d+) state=(\d) utc=(-?\d+|-) bound=(\d+|-) ts_seq=(\d+) bad=(\d+) "
                   r"overruns=(\d+) rejected=(\d+) err=(-?\d+) rx_in_tx=(\d+) rx_in_status=(\d+)"
                   r"(?: simlag_ns=(-?\d+) simlag_min_ns=(-?\d+) simlag_max_ns=(-?\d+) host_rt_ns=(\d+) "
                   r"host_mono_ns=(\d+) sim_ns=(\d+))?")
_STAMP = re.compile(r"^@(\d+) (\d+) ")
# A process of its own that only stamps the emulator's stdout lines with CLOCK_REALTIME as they
# arrive: one thread, no GIL shared with the test's threads (which can hold a reader back by the
# interpreter's 5 ms switch interval, more than once).
_STAMPER = ("import sys, time\n"
            "for line in sys.stdin:\n"
            "    sys.stdout.write('@%d %d %s' % (time.time_ns(), time.monotonic_ns(), line))\n"
            "    sys.stdout.flush()\n")


def parse_line(text: str, host_ns: int) -> Optional[DebugLine]:
    """A debug line; host_ns: the harness's own stamp (simavr), else the stamper's, else `host_ns`."""
    stamp = _STAMP.match(text)
    m = _LINE.search(text)
    if m is None:
        return None
    g = m.groups()
    mono = None
    if g[14] is not None:
        host_ns, mono = int(g[14]), int(g[15])
    elif stamp is not None:
        host_ns, mono = int(stamp.group(1)), int(stamp.group(2))
    num = [None if v is None or v == "-" else int(v) for v in g]
    return DebugLine(host_ns, num[0], num[1], num[2], num[3], num[4], num[5], num[6], num[7], num[8], num[9],
                     num[10], num[11] or 0, mono, num[16], num[12] or 0, num[13] or 0)  # type: ignore[arg-type]


class Emulator:
    """One emulated MCU with its UART on a pty behind `path`; `lines` collects its debug lines."""

    name = "?"
    device_id = 0
    tick_hz = 0

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.path = str(self.dir / f"tty{self.name}")
        self.lines: List[DebugLine] = []
        self.output: List[str] = []
        self.proc: Optional[subprocess.Popen[str]] = None
        self.starts = 0
        self.pts: Optional[str] = None  # the pty the emulator announced on stdout (QEMU)
        self._announced = threading.Event()
        self._lock = threading.Lock()
        self.start()

    # -- subclasses ------------------------------------------------------------------------------
    def _command(self) -> List[str]:
        raise NotImplementedError

    def _after_start(self) -> None:
        """Wait until the pty is linked at self.path."""

    def reset(self) -> None:
        """A hardware reset: the MCU starts over, the UART (pty) stays."""
        raise NotImplementedError

    # -- common ----------------------------------------------------------------------------------
    stamp_stdout = False  # pass stdout through the stamper process (lines without a stamp of their own)

    def start(self) -> None:
        self._announced.clear()
        self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.starts += 1
        out = self.proc.stdout
        if self.stamp_stdout:
            stamper = subprocess.Popen([sys.executable, "-u", "-c", _STAMPER], stdin=self.proc.stdout,
                                       stdout=subprocess.PIPE, text=True, bufsize=1)
            assert self.proc.stdout is not None
            self.proc.stdout.close()  # the stamper has it; it ends when the emulator does
            out = stamper.stdout
        threading.Thread(target=self._read, args=(out,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
        self._after_start()

    def _drain(self, stream: Optional[Iterator[str]]) -> None:
        assert stream is not None
        for text in stream:
            with self._lock:
                self.output.append(text.rstrip())

    def _read(self, stream: Optional[Iterator[str]]) -> None:
        assert stream is not None
        for text in stream:
            host_ns = time.time_ns()
            line = parse_line(text, host_ns)
            m = re.search(r"redirected to (/dev/pts/\d+)", text)
            if m:
                self.pts = m.group(1)
                self._announced.set()
            with self._lock:
                self.output.append(text.rstrip())
                if line is not None:
                    self.lines.append(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Power off and on: the emulator process ends (its pty goes) and a new one starts."""
        self.stop()
        self.start()

    def since(self, host_ns: int) -> List[DebugLine]:
        with self._lock:
            return [x for x in self.lines if x.host_ns >= host_ns]

    def last(self) -> Optional[DebugLine]:
        with self._lock:
            return self.lines[-1] if self.lines else None

    def wait_line(self, cond: Callable[[DebugLine], bool], timeout: float, what: str) -> DebugLine:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with self._lock:
                fresh = self.lines[seen:]
                seen = len(self.lines)
            for x in fresh:
                if cond(x):
                    return x
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited: {self.tail()}"
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: timed out waiting for {what}; last lines:\n{self.tail()}")

    def emitted_served(self, lines: List[DebugLine]) -> List[Optional[int]]:
        """The served time (CLOCK_MONOTONIC + SERVED_EPOCH_NS) at the instant each line's utc= was
        computed (its tick=); None for a line the emulator cannot place (see QemuMicrobit)."""
        raise NotImplementedError

    def check_within_bound(self, lines: List[DebugLine]) -> None:
        """Each line: the device's own UTC minus the served time (the gateway's) at the instant the
        device computed it, inside the device's own bound plus
        READ_ALLOWANCE_NS plus how much the emulation's lag behind real time varied since it
        started (simavr; 0 for QEMU). Synchronised or in holdover (a bridge that found no ping it
        trusted for valid_ms, as happens when a loaded host delays an emulator, stops sending)."""
        assert lines, self.tail()
        # The lag's range over everything since the emulator (re)started, not only these lines:
        # the pings behind the timescale in force saw the clock jitter that much.
        with self._lock:
            seen = [x for x in self.lines if x.host_ns <= lines[-1].host_ns]
        start = max((i for i in range(1, len(seen)) if seen[i].tick < seen[i - 1].tick), default=0)
        lo = min(min(x.simlag_min_ns, x.simlag_ns) for x in seen[start:])
        hi = max(max(x.simlag_max_ns, x.simlag_ns) for x in seen[start:])
        allowance = READ_ALLOWANCE_NS + (hi - lo)
        placed = self.emitted_served(lines)
        assert sum(rt is not None for rt in placed) >= max(2, len(lines) // 2), (placed, self.tail())
        for x, rt in zip(lines, placed):
            if rt is None:
                continue
            assert x.state in (1, 2) and x.utc_ns is not None and x.bound_ns is not None, x
            assert abs(x.utc_ns - rt) <= x.bound_ns + allowance, (x, x.utc_ns - rt, allowance)

    def tail(self, n: int = 8) -> str:
        with self._lock:
            return "\n".join(self.output[-n:])

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QemuMicrobit(Emulator):
    """qemu-system-arm -M microbit: Cortex-M0, nRF51 UART on `-serial pty`, semihosting on stdout."""

    name = "qemu-m0"
    device_id = 0x00B1CB17
    tick_hz = 16_000_000
    stamp_stdout = True

    def _command(self) -> List[str]:
        elf = build_emu() / "microbit.elf"
        self.monitor = str(self.dir / "qemu-monitor.sock")
        return ["qemu-system-arm", "-M", "microbit", "-kernel", str(elf), "-display", "none",
                "-serial", "pty", "-monitor", f"unix:{self.monitor},server=on,wait=off",
                "-chardev", "stdio,id=semi,signal=off",
                "-semihosting-config", "enable=on,target=native,chardev=semi"]

    def _after_start(self) -> None:
        # QEMU names the pty on stdout: "char device redirected to /dev/pts/N (label serial0)"
        assert self.proc is not None
        assert self._announced.wait(20) and self.pts, f"qemu did not name its pty: {self.tail()}"
        pts = self.pts
        tmp = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(pts, tmp)
        os.rename(tmp, self.path)

    def emitted_served(self, lines: List[DebugLine]) -> List[Optional[int]]:
        # Without -icount the guest's SysTick runs off QEMU's virtual clock, which is the host's
        # CLOCK_MONOTONIC plus a constant (changed only by a reset): tick / 16 MHz = mono - C.
        # Each line reached us at least as late as it was written, so C is the smallest
        # (mono_read - tick / 16 MHz) over the lines since the last reset, the earliest-arriving one.
        # One exception: a host so loaded that QEMU's vCPU did not run for a whole SysTick period
        # (1.05 s) while its virtual clock did -- the one wrap interrupt stands for two or more
        # periods, and the device's ticks fall behind by whole periods (an MCU whose core stopped
        # while time went on). That shows as a jump in C; the lines after one are placed with the
        # new C, and not judged (None) until a TIMESCALE made after it has reached the device.
        ns_per_tick = 1e9 / self.tick_hz
        with self._lock:
            seg = [x for x in self.lines if x.mono_ns is not None]
        start = max((i for i in range(1, len(seg)) if seg[i].tick < seg[i - 1].tick), default=0)
        seg = seg[start:]
        runs: List[List[DebugLine]] = []
        for x in seg:
            d = x.mono_ns - x.tick * ns_per_tick  # type: ignore[operator]
            if runs and abs(d - (runs[-1][-1].mono_ns - runs[-1][-1].tick * ns_per_tick)) < 250e6:  # type: ignore[operator]
                runs[-1].append(x)
            else:
                runs.append([x])
        placed: dict[int, Optional[int]] = {}
        for k, run in enumerate(runs):
            c = min(x.mono_ns - x.tick * ns_per_tick for x in run)  # type: ignore[operator]
            judged = k == 0
            for x in run:
                judged = judged or x.ts_seq != run[0].ts_seq
                placed[id(x)] = round(x.tick * ns_per_tick + c) + SERVED_EPOCH_NS if judged else None
        return [placed.get(id(x)) for x in lines]

    def reset(self) -> None:
        """`system_reset` on QEMU's monitor: CPU and devices reset, the image reloaded, pty kept."""
        def until_prompt(s: socket.socket) -> bytes:
            got = b""
            while not got.endswith(b"(qemu) "):
                chunk = s.recv(4096)
                assert chunk, f"qemu monitor closed: {got!r}"
                got += chunk
            return got

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.monitor)
            until_prompt(s)
            s.sendall(b"system_reset\n")
            until_prompt(s)


class SimAvr(Emulator):
    """simavr's ATmega328P at 16 MHz through emu/simavr_uart.c: USART0 on a pty, paced to real time."""

    name = "simavr-328p"
    device_id = 0x00A5D001
    tick_hz = 250_000

    def _command(self) -> List[str]:
        d = build_emu()
        return [str(d / "simavr-uart"), str(d / "avr-sim.elf"), "--link", self.path]

    def _after_start(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 20
        while not os.path.islink(self.path):
            assert self.proc.poll() is None, f"simavr-uart exited {self.proc.returncode}"
            assert time.monotonic() < deadline, "simavr-uart did not link its pty"
            time.sleep(0.02)

    def emitted_served(self, lines: List[DebugLine]) -> List[Optional[int]]:
        # The harness stamped the line's end (host_mono_ns) and knew simulated time then (sim_ns);
        # the firmware computed utc= at tick= (250 kHz: 4000 ns a tick of simulated time) and spent
        # the rest formatting the line.
        ns_per_tick = 1e9 / self.tick_hz
        return [None if x.mono_ns is None else
                round(x.mono_ns - ((x.sim_ns or 0) - x.tick * ns_per_tick)) + SERVED_EPOCH_NS for x in lines]

    def reset(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)


EMULATORS = {"qemu-m0": QemuMicrobit, "simavr-328p": SimAvr}
TOOLS = {"qemu-m0": ("qemu-system-arm", "arm-none-eabi-gcc"), "simavr-328p": ("avr-gcc", "simavr")}


@pytest.fixture
def served_epoch_s() -> int:
    """What `tsq server --clock monotonic --clock-offset` adds to serve the tests' timescale."""
    return SERVED_EPOCH_S


@pytest.fixture(params=sorted(EMULATORS))
def emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    _need(*TOOLS[request.param])
    build_emu()
    with tempfile.TemporaryDirectory(prefix="tsq-mcu-") as d:  # short: a unix socket lives here
        emu = EMULATORS[request.param](d)
        try:
            yield emu
        finally:
            emu.stop()


class BridgeThread:
    """The real bridge (tsq.bridge.service.Bridge, the code `python -m tsq.bridge PORT --source system
    --assume-bound 1000 --single-ping` runs, on CLOCK_MONOTONIC: see the module's docstring) on its
    own event loop in a thread, so a test can watch
    the emulator's debug lines meanwhile. `call(fn)` runs fn on the bridge's loop and returns its result."""

    def __init__(self, path: str, ping_interval_s: float = 0.25) -> None:
        from tsq.bridge.service import Bridge, BridgeConfig

        try:  # its home after the architecture change (issue 10); before it, tsq.sync
            from tsq.gateway.systemmodel import SystemClockModel
        except ImportError:
            from tsq.sync.systemmodel import SystemClockModel  # type: ignore[no-redef]

        # One ping per interval (`--single-ping`): the bridge counts a PONG whose T2 precedes the
        # previous PONG's T3 as a device reset and drops its fit; a device that stamps T2 in its RX
        # interrupt does send such a pair when the measured PING lands while the warm-up PONG is
        # still queued, which under emulation (bursty RX, slow main loop) is most of the time.
        self.bridge = Bridge(BridgeConfig(ports=[path], ping_interval_s=ping_interval_s, warmup_ping=False,
                                          backoff_initial_s=0.05, backoff_max_s=0.3),
                             SystemClockModel(assume_bound_ns=1000, clock_id=time.CLOCK_MONOTONIC,
                                              add_ns=SERVED_EPOCH_NS))
        self.loop = asyncio.new_event_loop()
        self._task: Optional[asyncio.Task[None]] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(self.bridge.run())
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self._task)
        self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        async def on_loop() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(10)

    def status(self) -> Any:   # tsq.bridge.status.DeviceStatus
        return self.call(lambda: self.bridge.status()[0])

    def session(self, attr: str) -> Any:
        return self.call(lambda: getattr(self.bridge.drivers[0].session, attr))

    def wait(self, cond: Callable[[Any], bool], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        st = self.status()
        while not cond(st):
            assert time.monotonic() < deadline, f"bridge: timed out waiting for {what}; status {st}"
            time.sleep(0.1)
            st = self.status()
        return st

    def stop(self) -> None:
        if self._thread.is_alive() and self._task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(20)

    def __enter__(self) -> BridgeThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def bridge() -> Iterator[Callable[[str], BridgeThread]]:
    """bridge(path): the real bridge on `path`, stopped at the end of the test."""
    started: List[BridgeThread] = []

    def start(path: str) -> BridgeThread:
        b = BridgeThread(path)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
