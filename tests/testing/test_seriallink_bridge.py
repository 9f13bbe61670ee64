"""The real bridge (`python -m tsq.bridge`) synchronising the real firmware host build through the
line models: a USB adapter as shipped (FTDI, 16 ms latency timer), one with low latency set and the
bridge's read-latency probe on, and a Raspberry Pi UART (PL011)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pytest

from tsq.testing.daemon import subprocess_env
from tsq.testing.firmware import FirmwareError, SimulatedDevice, build_host_firmware
from tsq.testing.seriallink import LineProcess

try:
    BINARY = build_host_firmware()
except FirmwareError as exc:  # pragma: no cover - CI installs build-essential
    pytest.skip(f"no host firmware: {exc}", allow_module_level=True)

SYNCED = 1  # truth-log state: synchronised


@pytest.mark.parametrize("link, extra", [("ftdi", ()), ("pl011", ()), ("ftdi-low", ("--read-probe",))],
                         ids=["ftdi", "pl011", "ftdi-low-read-probe"])
def test_bridge_synchronises_a_device_behind_the_link(link: str, extra: tuple[str, ...]) -> None:
    """Converges, and the device's own bound covers its true error; with `--read-probe` the host's
    read latency is taken off the USB grid's phase (the estimate moves, the bound does not)."""
    with tempfile.TemporaryDirectory() as d, \
            SimulatedDevice(d, device_id=0x11AC, drift_ppm=40, offset_ms=3, binary=BINARY) as dev, \
            LineProcess(link, 115200, device=dev.path, seed=4) as line:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "tsq.bridge", line.host_path, "--source", "system", "--assume-bound",
             "1000", "--baud", "115200", "--ping-interval", "0.5", "--link", link,
             "--control", os.path.join(d, "control.sock"), *extra],
            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 75
            synced_at = None
            while time.monotonic() < deadline:
                rows = [r for r in dev.truth() if r[3] == SYNCED and r[1] is not None and r[2] is not None]
                if synced_at is None and rows:
                    synced_at = time.time_ns()
                if synced_at is not None and len([r for r in rows if r[0] > synced_at]) >= 5:
                    break
                assert bridge.poll() is None, bridge.communicate()[1]
                time.sleep(0.5)
            assert synced_at is not None, f"never synchronised behind {link}: {dev.truth()[-3:]}"
            rows = [r for r in dev.truth() if r[3] == SYNCED and r[1] is not None and r[2] is not None]
            assert len(rows) >= 5, rows
            # the device's own bound covers its true error on every reading
            assert all(abs(e) <= b for _, e, b, _ in rows), [(e, b) for _, e, b, _ in rows]
        finally:
            bridge.terminate()
            bridge.communicate(timeout=20)
    assert line.stats["releases"] > 0
