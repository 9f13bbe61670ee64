"""DeviceSession/DeviceDriver over a real pty with the real codec, against a Python STAND-IN device.

Beside the tests with the real C firmware (test_firmware_e2e.py), this stand-in device (a thread with
a skewed tick counter speaking tsq.bridge.frames) exercises the bridge's side with device behaviour
the firmware does not offer on demand: handshake, pings, regression, TIMESCALE, device reset,
garbage, hot-plug, status. It is named as such and is not used outside the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from typing import Any

from tsq.bridge.device import DeviceDriver
from tsq.bridge.port import Backoff, PortLink
from tsq.gateway.systemmodel import SystemClockModel
from tsq.testing.standin_device import StandInDevice


def _pty_at(link: str) -> tuple[int, int]:
    """A new pty under the name `link`. The test keeps the slave fd too: a master reads EIO while no
    slave is open, which would end the device thread before the bridge opened the port."""
    master, slave = os.openpty()
    os.symlink(os.ttyname(slave), link + ".new")
    os.replace(link + ".new", link)
    return master, slave


async def _until(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_session_converges_survives_garbage_reset_and_replug() -> None:
    d = tempfile.mkdtemp()
    link = os.path.join(d, "ttyDEV")

    async def main() -> None:
        master, slave = _pty_at(link)
        dev = StandInDevice(master, 0xC0FFEE, 50.0)
        model = SystemClockModel(assume_bound_ns=1000)
        pl = PortLink(link, 115200, on_data=lambda b, t: None, backoff=Backoff(0.01, 0.05))
        drv = DeviceDriver(pl, model, ping_interval_s=0.05)
        tasks = [asyncio.create_task(pl.run()), asyncio.create_task(drv.run())]
        dev.start()
        try:
            await _until(lambda: len(dev.errors) >= 30, 20)
            st = drv.status()
            assert st["device"] == "0x00c0ffee" and st["firmware"] == "0.1.0"
            assert st["state"] == "synchronised" and st["bad_frames"] == 0
            # A 1.6 s window of 50 ms pings over a Python stand-in: only a sanity check of the rate.
            assert abs(drv.session.fit.freq_ppm - 50.0) < 200  # type: ignore[union-attr,operator]
            late = dev.errors[-10:]
            # Every update's true error is inside its bound (pty latency on a loaded CI box: generous).
            assert all(abs(e) <= b for e, b in late), late
            assert max(abs(e) for e, _ in late) < 2_000_000
            # Garbage on the line: dropped, counted, the session goes on.
            dev.garbage = os.urandom(200) + b"\x00"
            n = len(dev.errors)
            await _until(lambda: len(dev.errors) >= n + 5, 10)
            assert drv.status()["bad_frames"] >= 1
            # Device reset: HELLO again, ticks start from zero; the fit starts over and reconverges.
            dev.reset()
            await _until(lambda: drv.session.resets >= 1, 10)
            n = len(dev.errors)
            await _until(lambda: len(dev.errors) >= n + 10, 20)
            assert all(abs(e) <= b for e, b in dev.errors[-5:])
            # Unplug: the node goes; the state says so; a new node under the same name resumes.
            dev.stop.set()
            dev.join(2)
            os.close(master)
            os.close(slave)
            await _until(lambda: drv.status()["state"] == "disconnected", 10)
            master, slave = _pty_at(link)
            dev = StandInDevice(master, 0xC0FFEE, -20.0)
            dev.start()
            await _until(lambda: len(dev.errors) >= 10, 20)
            assert drv.status()["state"] == "synchronised"
        finally:
            dev.stop.set()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            os.close(master)
            os.close(slave)

    asyncio.run(asyncio.wait_for(main(), 90))
