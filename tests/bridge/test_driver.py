"""DeviceDriver on bad input and its event lines: a HELLO with nonsense fields over a real pty is
dropped and counted (no traceback, no bogus device), handshake and reset are logged once each, and
no byte stream (hypothesis) makes the driver or its session raise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
from typing import Any, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsq.bridge import frames
from tsq.bridge.driver import DeviceDriver
from tsq.bridge.port import Backoff, PortLink
from tsq.clock import raw_ns
from tsq.gateway.systemmodel import SystemClockModel


def _pty_at(link: str) -> tuple[int, int]:
    master, slave = os.openpty()
    os.symlink(os.ttyname(slave), link + ".new")
    os.replace(link + ".new", link)
    return master, slave


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_nonsense_hello_is_dropped_then_handshake_and_reset_are_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tsq.bridge")
    path = os.path.join(tempfile.mkdtemp(), "ttyDEV")

    async def main() -> dict[str, Any]:
        master, slave = _pty_at(path)
        pl = PortLink(path, 115200, on_data=lambda b, t: None, backoff=Backoff(0.01, 0.05))
        drv = DeviceDriver(pl, SystemClockModel(assume_bound_ns=1000), ping_interval_s=0.05)
        tasks = [asyncio.create_task(pl.run()), asyncio.create_task(drv.run())]
        try:
            await asyncio.wait_for(pl.wait_connected(), 5)
            for hz in (0, 2**32 - 1):   # the 32 tracebacks and the "synchronised" bogus device of issue 14
                os.write(master, frames.encode(frames.Hello(1, 0xBAD, (1, 0, 0), 1, hz, 0)))
            await _until(lambda: drv.status().implausible_frames == 2)
            st = drv.status()
            assert st.state == "handshake" and st.device is None and st.bad_frames == 2
            assert drv.session.hello is None and drv.internal_errors == 0
            os.write(master, frames.encode(frames.Hello(2, 0xC0FFEE, (1, 2, 3), 1, 1_000_000, 1)))
            await _until(lambda: drv.session.hello is not None)
            os.write(master, frames.encode(frames.Hello(3, 0xC0FFEE, (1, 2, 3), 1, 1_000_000, 1)))
            await _until(lambda: drv.session.resets == 1)
            return drv.status()
        finally:
            await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            os.close(master)
            os.close(slave)

    st = asyncio.run(asyncio.wait_for(main(), 30))
    assert st.device == "0x00c0ffee" and st.link == "pty" and st.implausible_frames == 2
    assert st.low_latency == "not applicable (pty)" and st.port_error is None
    lines = [r.getMessage() for r in caplog.records if r.name == "tsq.bridge"]
    drops = [m for m in lines if "dropped " in m]
    assert len(drops) == 1, lines       # the second reason came within the 10 s rate limit
    assert re.search(r": dropped [12] device frame\(s\), the last: HELLO tick rate (0|4294967295) Hz "
                     r"outside 1000\.\.2000000000 \(bad frames so far [12]\)", drops[0]), drops
    assert any(m.startswith(f"{path}: handshake: device 0x00c0ffee, firmware 1.2.3, ticks at 1000000 Hz")
               for m in lines), lines
    assert sum(f"{path}: device reset (HELLO again): device 0x00c0ffee" in m for m in lines) == 1, lines
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# -- fuzz: anything a line can deliver, never an exception ----------------------------------------
U64 = st.integers(0, 2**64 - 1)
Action = Union[bytes, str]

_frames = st.one_of(
    st.builds(frames.Hello, st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
              st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
              st.sampled_from([0, 1, 1, 1, 2, 255]),
              st.one_of(st.sampled_from([0, 1, 999, 1000, 32_768, 1_000_000, 2_000_000_000, 2**32 - 1]),
                        st.integers(0, 2**32 - 1)),
              st.integers(0, 0xFFFF)),
    st.builds(frames.Pong, st.integers(0, 12), U64, U64),
    st.builds(lambda seq, t2, d: frames.Pong(seq, t2, min(t2 + d, 2**64 - 1)),
              st.integers(0, 12), st.one_of(st.integers(0, 10**7), U64), st.integers(0, 10**6)),
    st.builds(frames.Status, st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 0xFFFF),
              st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
              st.integers(0, 0xFFFF)),
).map(frames.encode)

_actions = st.lists(st.one_of(
    _frames, _frames, st.binary(max_size=70), st.just("ping"), st.just("reopen"),
    _frames.flatmap(lambda f: st.integers(0, len(f)).map(lambda i: f[:i])),   # a frame cut short
), max_size=40)


def _driver() -> DeviceDriver:
    pl = PortLink("/nonexistent/ttyFUZZ", 115200, on_data=lambda b, t: None)
    return DeviceDriver(pl, SystemClockModel(assume_bound_ns=1000), ping_interval_s=1.0)


@settings(max_examples=300, deadline=None)
@given(_actions)
def test_no_byte_stream_makes_the_driver_raise(actions: list[Action]) -> None:
    drv = _driver()
    drv._on_open()
    now = raw_ns()
    for act in actions:
        now += 1_000_000
        if act == "ping":
            ping = drv.session.make_ping(now)
            if ping is not None:
                acc = drv.session.sent(ping[0], now + 10_000)
                if acc is not None:
                    drv._accepted(acc)
        elif act == "reopen":
            drv._on_close("fuzz")
            drv._on_open()
        else:
            assert isinstance(act, bytes)
            drv._on_data(act, now)
        assert drv.internal_errors == 0
    st_ = drv.status()
    assert st_.bad_frames >= st_.implausible_frames >= 0
    if drv.session.hello is not None:
        assert frames.MIN_TICK_HZ <= drv.session.hello.tick_hz <= frames.MAX_TICK_HZ
