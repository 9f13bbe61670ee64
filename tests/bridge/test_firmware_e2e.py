"""The bridge against the REAL firmware host build (firmware-bridge/ports/posix) over ptys.

The system clock is the time source (SystemClockModel with an explicit bound) and also the truth the
firmware's truth log compares against, so the end-to-end errors checked here are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

from tsq.bridge.service import Bridge, BridgeConfig
from tsq.gateway.systemmodel import SystemClockModel
from tsq.testing.firmware import FirmwareError, SimulatedDevice, build_host_firmware

try:
    BINARY = build_host_firmware()
except FirmwareError as exc:  # pragma: no cover - CI installs build-essential
    pytest.skip(f"no host firmware: {exc}", allow_module_level=True)

SYNCED = 1  # truth-log state: synchronised


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _bridge(paths: List[str], reply_spin_ms: float = 0.0) -> Bridge:
    return Bridge(BridgeConfig(ports=paths, ping_interval_s=0.2, backoff_initial_s=0.02, backoff_max_s=0.2,
                               reply_spin_ms=reply_spin_ms),
                  SystemClockModel(assume_bound_ns=1000))


def _synced_rows(dev: SimulatedDevice, since_ns: int) -> list[tuple[int, int, int]]:
    return [(rt, e, b) for rt, e, b, s in dev.truth() if s == SYNCED and rt >= since_ns
            and e is not None and b is not None]


async def _run(bridge: Bridge, body: Callable[[], Any]) -> None:
    task = asyncio.create_task(bridge.run())
    try:
        await body()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("extra, reply_spin_ms", [((), 0.0), (("--rx-spin-ms", "2000"), 0.0), ((), 5.0)],
                         ids=["sleeping", "rx-spin", "reply-window"])
def test_converges_and_stays_within_its_bound(extra: tuple[str, ...], reply_spin_ms: float) -> None:
    # rx-spin: the stand-in polls its tty without sleeping (as benchmarks/bridge.py runs it);
    # reply-window: the bridge watches for each PONG without sleeping (--reply-spin-ms)
    with tempfile.TemporaryDirectory() as d, SimulatedDevice(d, device_id=0xC0FFEE, drift_ppm=50,
                                                             offset_ms=7, binary=BINARY, extra=extra) as dev:
        bridge = _bridge([dev.path], reply_spin_ms)

        async def body() -> None:
            await _until(lambda: bridge.status()[0].state == "synchronised", 20, "synchronised")
            start = time.time_ns() + 2 * 10**9  # let the 50 ppm fit settle
            await _until(lambda: len(_synced_rows(dev, start)) >= 5, 20, "5 truth rows")
            rows = _synced_rows(dev, start)
            assert all(abs(e) <= b for _, e, b in rows), rows
            assert max(abs(e) for _, e, _ in rows) < 1_000_000, rows  # loaded 2-core CI: generous
            st = bridge.status()[0]
            assert st.device == "0x00c0ffee" and st.firmware == "1.0.0" and st.bad_frames == 0

        asyncio.run(asyncio.wait_for(_run(bridge, body), 60))


def test_device_restart_and_garbage_to_the_device() -> None:
    with tempfile.TemporaryDirectory() as d, SimulatedDevice(d, device_id=0xBEEF, drift_ppm=-20,
                                                             binary=BINARY) as dev:
        bridge = _bridge([dev.path])

        async def body() -> None:
            await _until(lambda: bridge.status()[0].state == "synchronised", 20, "synchronised")
            dev.reset()
            await _until(lambda: bridge.drivers[0].session.resets >= 1, 10, "reset seen")
            since = time.time_ns()
            await _until(lambda: len(_synced_rows(dev, since)) >= 3, 20, "resynchronised after reset")
            assert all(abs(e) <= b for _, e, b in _synced_rows(dev, since))
            # Random bytes to the device (a second writer on the line): dropped there, sync goes on.
            fd = os.open(dev.path, os.O_WRONLY | os.O_NOCTTY)
            try:
                os.write(fd, os.urandom(300) + b"\x00")
            finally:
                os.close(fd)
            since = time.time_ns()
            await _until(lambda: len(_synced_rows(dev, since)) >= 3, 20, "still synchronised after garbage")

        asyncio.run(asyncio.wait_for(_run(bridge, body), 90))


def test_two_devices_at_once() -> None:
    with tempfile.TemporaryDirectory() as d, \
            SimulatedDevice(d, device_id=1, drift_ppm=50, binary=BINARY) as a, \
            SimulatedDevice(d, device_id=2, drift_ppm=-35, offset_ms=-4, binary=BINARY) as b:
        bridge = _bridge([a.path, b.path])

        async def body() -> None:
            await _until(lambda: all(s.state == "synchronised" for s in bridge.status()), 30, "both")
            since = time.time_ns() + 10**9
            for dev in (a, b):
                await _until(lambda dev=dev: len(_synced_rows(dev, since)) >= 3, 20, "truth rows")
                assert all(abs(e) <= bd for _, e, bd in _synced_rows(dev, since))
            assert {s.device for s in bridge.status()} == {"0x00000001", "0x00000002"}

        asyncio.run(asyncio.wait_for(_run(bridge, body), 90))


@pytest.mark.slow
def test_hundred_unplug_replug_cycles() -> None:
    with tempfile.TemporaryDirectory() as d, SimulatedDevice(d, device_id=0x100, drift_ppm=10,
                                                             binary=BINARY) as dev:
        bridge = _bridge([dev.path])

        async def body() -> None:
            await _until(lambda: bridge.status()[0].state == "synchronised", 20, "synchronised")
            def link_id() -> tuple[int, int]:
                try:
                    st = os.lstat(dev.path)
                except FileNotFoundError:
                    return (0, 0)
                return (st.st_ino, st.st_mtime_ns)

            for i in range(100):
                before = link_id()
                dev.replug()
                # the firmware closes its pty and makes a new one (often the same /dev/pts/N number)
                # behind a freshly made link at the same path
                await _until(lambda before=before: link_id() not in (before, (0, 0)), 10, f"replug {i}")
            since = time.time_ns()
            await _until(lambda: bridge.status()[0].state == "synchronised"
                         and len(_synced_rows(dev, since)) >= 2, 30, "synchronised after 100 replugs")
            assert dev.proc.poll() is None
            # The bridge saw the port go and come back (replugs closer together than its backoff
            # may merge, so not necessarily 100 times).
            assert bridge.links[0].opens >= 20, bridge.links[0].opens

        asyncio.run(asyncio.wait_for(_run(bridge, body), 180))


def test_full_chain_cli_server_engine_bridge_firmware_status() -> None:
    """`python -m tsq.bridge PORT --server ... --ca ...`: a real TSQ server, the engine in the bridge
    process, the firmware on a pty; `tsq status --json` lists the source and the device."""
    import json
    import subprocess
    import sys

    from tsq.testing.certs import make_pki
    from tsq.testing.daemon import ServerProcess, subprocess_env

    with tempfile.TemporaryDirectory() as d, SimulatedDevice(d, device_id=0xC4A1, drift_ppm=50,
                                                             binary=BINARY) as dev:
        pki = make_pki(d)
        with ServerProcess(pki) as server:
            ctl = os.path.join(d, "control.sock")
            bridge = subprocess.Popen(
                [sys.executable, "-m", "tsq.bridge", dev.path, "--server", server.address, "--ca",
                 pki.ca_cert, "--control", ctl, "--log", os.path.join(d, "log"), "--ping-interval", "0.25"],
                env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 40
                st: dict[str, Any] = {}
                while time.monotonic() < deadline:
                    p = subprocess.run([sys.executable, "-m", "tsq", "status", "--json", "--control", ctl],
                                       capture_output=True, text=True, env=subprocess_env(), timeout=30)
                    if p.returncode == 0:
                        st = json.loads(p.stdout)
                        devs = st.get("devices") or []
                        if st.get("state") == "synchronised" and devs and devs[0]["state"] == "synchronised":
                            break
                    time.sleep(0.5)
                assert st.get("state") == "synchronised", st
                assert st["sources"][0]["name"] == server.address
                dev0 = st["devices"][0]
                assert dev0["device"] == "0x0000c4a1" and dev0["state"] == "synchronised"
                since = time.time_ns()
                deadline = time.monotonic() + 20
                while len(_synced_rows(dev, since)) < 3 and time.monotonic() < deadline:
                    time.sleep(0.2)
                rows = _synced_rows(dev, since)
                assert len(rows) >= 3 and all(abs(e) <= b for _, e, b in rows), rows
                logdir = Path(d, "log")
                assert list(logdir.glob("devices-*.csv")) and list(logdir.glob("gateway-*.csv"))
            finally:
                bridge.terminate()
                _, err = bridge.communicate(timeout=20)
            assert bridge.returncode == 0, err
