"""The device firmware's host build (firmware-bridge/ports/posix), built and run on this machine.

`build_host_firmware()` compiles it with the system C compiler (make) and returns the binary;
`SimulatedDevice` runs it with a simulated crystal on a pseudo-terminal that the firmware creates
itself and links at `.path` (the bridge opens that, as it would /dev/ttyUSB0), and reads the
truth log the host build writes: its own UTC against CLOCK_REALTIME, once a second.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple


class FirmwareError(RuntimeError):
    """The host firmware could not be found or built; the message says what to install."""


# setup.py copies firmware-bridge's sources (Makefile, include/, src/, ports/posix/) here in a built
# package, so an installed `tsq demo` runs the real firmware too.
PACKAGED_SOURCES = Path(__file__).resolve().parent / "firmware-src"


def firmware_source_dir() -> Path:
    """$TSQ_FIRMWARE_DIR, else firmware-bridge/ of the checkout this package is in, else the sources
    installed with the package, else firmware-bridge/ under the current directory."""
    env = os.environ.get("TSQ_FIRMWARE_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "firmware-bridge", PACKAGED_SOURCES,
                   Path.cwd() / "firmware-bridge"]
    for c in candidates:
        if (c / "Makefile").is_file() and (c / "ports" / "posix" / "main.c").is_file():
            return c
    raise FirmwareError("firmware-bridge/ sources not found (neither in a checkout nor installed with "
                        "the package): set TSQ_FIRMWARE_DIR")


def build_host_firmware(build_dir: Optional[Path] = None) -> Path:
    """Build (or reuse) the posix host firmware; returns the binary's path."""
    src = firmware_source_dir()
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None:
        raise FirmwareError("building the host firmware needs make and a C compiler "
                            "(apt-get install build-essential)")
    out = build_dir or Path(tempfile.gettempdir()) / f"tsq-firmware-{os.getuid()}"
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["make", "-s", "-C", str(src), "host", f"B={out}"], capture_output=True, text=True)
    binary = out / "tsqb-posix"
    if proc.returncode != 0 or not binary.is_file():
        raise FirmwareError(f"building the host firmware failed:\n{proc.stdout}{proc.stderr}")
    return binary


class SimulatedDevice:
    """One firmware process on its own pty; `path` is the port the bridge opens."""

    def __init__(self, directory: str, *, device_id: int, drift_ppm: float = 0.0, offset_ms: float = 0.0,
                 wander: float = 0.0, binary: Optional[Path] = None, extra: Tuple[str, ...] = (),
                 truth_dir: Optional[str] = None) -> None:
        self.directory = Path(directory)
        self.device_id = device_id
        self.path = str(self.directory / f"ttyTSQ{device_id:08x}")
        # truth_dir: e.g. the field-log directory, where `tsq report` finds truth-<id>.log by itself
        self.truth_path = Path(truth_dir or directory) / f"truth-{device_id:08x}.log"
        exe = binary or build_host_firmware()
        self.proc = subprocess.Popen(
            [str(exe), "--link", self.path, "--device-id", hex(device_id), "--drift-ppm", str(drift_ppm),
             "--offset-ms", str(offset_ms), "--wander", str(wander), "--truth-log", str(self.truth_path),
             *extra], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise FirmwareError(f"host firmware did not create {self.path}")
            time.sleep(0.01)

    def truth(self) -> List[Tuple[int, Optional[int], Optional[int], int]]:
        """Truth-log rows: (realtime_ns, error_ns or None, bound_ns or None, state)."""
        rows = []
        try:
            text = self.truth_path.read_text()
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue  # the line being written
            rt, _utc, err, bound, state = parts
            rows.append((int(rt), None if err == "-" else int(err), None if bound == "-" else int(bound),
                         int(state)))
        return rows

    def true_error_ns(self) -> Optional[int]:
        """The latest truth-log error (device UTC minus CLOCK_REALTIME)."""
        rows = self.truth()
        return rows[-1][1] if rows else None

    def reset(self) -> None:
        """A device reset (SIGUSR1): ticks restart, state lost, a new HELLO."""
        self.proc.send_signal(signal.SIGUSR1)

    def replug(self) -> None:
        """Unplug and plug back in (SIGUSR2): a new pty behind the same path."""
        self.proc.send_signal(signal.SIGUSR2)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> SimulatedDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
