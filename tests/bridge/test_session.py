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
import random
import tempfile
import time
from typing import Any, Iterator, Optional

import pytest

from tsq.bridge import frames, links
from tsq.bridge.device import Accepted, DeviceSession, FramesCodec
from tsq.bridge.driver import DeviceDriver
from tsq.bridge.port import Backoff, PortLink
from tsq.gateway.systemmodel import SystemClockModel
from tsq.testing.standin_device import StandInDevice
from tsq.testing.timemodels import FixedModel


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
            assert st.device == "0x00c0ffee" and st.firmware == "0.1.0"
            assert st.state == "synchronised" and st.bad_frames == 0
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
            assert drv.status().bad_frames >= 1
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
            await _until(lambda: drv.status().state == "disconnected", 10)
            master, slave = _pty_at(link)
            dev = StandInDevice(master, 0xC0FFEE, -20.0)
            dev.start()
            await _until(lambda: len(dev.errors) >= 10, 20)
            assert drv.status().state == "synchronised"
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


# -- sans-IO: the session's own logic, on simulated lines -------------------------------------------


NS = 1_000_000_000


def _hello(tick_hz: int = 1_000_000) -> bytes:
    return frames.encode(frames.Hello(1, 0xBEEF, (1, 0, 0), 1, tick_hz, 0))


def _ping(s: DeviceSession, t1: int, t2: int, t3: int, t4: int) -> list[Accepted]:
    p = s.make_ping(t1)
    assert p is not None
    assert s.sent(p[0], t1) is None
    return s.received(frames.encode(frames.Pong(p[0], t2, t3)), t4)


def test_ticks_going_back_means_a_reset_t2_against_t2_not_t3() -> None:
    s = DeviceSession("pty", FixedModel())
    s.opened()
    s.received(_hello(), 0)
    # ticks = 1e6 + (raw - 1 s) / 1 µs; the main loop takes 2.9 ms to answer the first PING.
    assert len(_ping(s, NS, 1_000_100, 1_003_000, NS + 3_100_000)) == 1
    # The ISR stamped this PING (T2) before the main loop stamped the previous PONG's T3: legal.
    assert len(_ping(s, NS + 2_000_000, 1_002_100, 1_003_100, NS + 3_300_000)) == 1
    assert s.resets == 0 and s.fit is not None and s.fit.points == 2
    # T2 below the previous T2: the counter restarted (a reset whose HELLO was lost). The session
    # starts over and asks the device who it is: the next frame is a HELLO request, not a PING.
    assert _ping(s, 2 * NS, 500, 510, 2 * NS + 200_000) == []
    assert s.resets == 1 and s.fit is None and s.hello is None and s.state(2 * NS) == "handshake"
    p = s.make_ping(3 * NS)
    assert p is not None and isinstance(frames.decode(p[1][:-1]), frames.HelloRequest)
    s.received(_hello(), 3 * NS + 100_000)
    assert s.resets == 1 and s.hello is not None   # the HELLO it asked for is not a second reset
    assert len(_ping(s, 4 * NS, 600, 610, 4 * NS + 200_000)) == 1 and s.fit is not None


def test_a_hello_without_a_tick_rate_is_dropped_and_counted() -> None:
    s = DeviceSession("pty", FixedModel())
    s.opened()
    s.received(_hello(0), 0)
    assert s.hello is None and s.bad_frames == 1 and s.state(0) == "handshake"


def test_link_minimums_and_status_keys() -> None:
    s = DeviceSession("ttyAMA0", FixedModel(), link=links.PROFILES["pl011"], baud=115200)
    assert s.frame_bytes == 24
    assert s.min_out_ns == int(24 * 86_805 * 0.97) and s.min_back_ns >= s.min_out_ns
    pty = DeviceSession("pty", FixedModel())
    assert pty.line_minimums() == (0, 0)
    st = s.status(0)
    assert st.link == "pl011" and st.fit_points is None
    for key in ("device", "port", "state", "firmware", "residual_ns", "line_delay_ns", "bound_ns",
                "last_seen_age_s", "bad_frames", "fit_width_ns", "fit_empty_resets"):
        assert key in st.to_json()
    for bad in ({"baud_tolerance": 1.0}, {"baud_tolerance": -0.1}, {"wander_ppb": -1.0}):
        with pytest.raises(ValueError):
            DeviceSession("pty", FixedModel(), **bad)  # type: ignore[arg-type]


def test_timescales_over_a_quantised_usb_line_hold_their_bound() -> None:
    """FTDI with low latency (1 ms frames, 24-byte frames at 115200), a +40 ppm device: every
    TIMESCALE the session serves is right within its own bound for the next ping interval, and the
    bound is far below what half the 4 ms round trip would be."""
    rng = random.Random(7)
    link = links.PROFILES["ftdi-low"]
    s = DeviceSession("ttyUSB0", FixedModel(), link=link, baud=115200)
    s.opened()
    s.received(_hello(), 0)
    ser = 24 * link.byte_ns(115200)

    def ticks(raw: int) -> int:
        return 777 + raw * 1_000_040 // 1_000_000_000

    t1, bounds = 10 * NS, []
    for _ in range(60):
        t1 += NS + rng.randrange(1_000_000)
        t2_raw = t1 + ser + 1_000_000 - (t1 + ser) % 1_000_000 + rng.randrange(2_000)
        t3_raw = t2_raw + 40_000 + rng.randrange(20_000)
        t4 = t3_raw + ser + rng.randrange(1_000_000)
        _ping(s, t1, ticks(t2_raw), ticks(t3_raw), t4)
        now = t4 + 1_000_000
        ts = s.timescale(now)
        if ts is None:
            continue
        for q in (now, now + NS // 2, now + NS):
            device_utc = ts.utc0_ns + (ticks(q) - ts.t0_ticks) * ts.ns_per_tick
            assert abs(device_utc - (q + NS)) <= ts.bound_ns, (q, ts)
        bounds.append(ts.bound_ns)
    assert len(bounds) >= 50 and bounds[-1] < 200_000
    st = s.status(t1)
    assert st.fit_points == 60 and st.fit_empty_resets == 0 and st.fit_width_ns < 400_000


class _UncheckedDecoder(frames.StreamDecoder):
    """Frames as decoded, without `frames.check_fields`: what another codec might hand the session."""

    def feed(self, data: bytes) -> Iterator[frames.Message]:
        return iter([frames._decode(f) for f in data.split(b"\x00") if f])


class _UncheckedCodec(FramesCodec):
    def new_decoder(self) -> frames.StreamDecoder:
        return _UncheckedDecoder()


class _NoUtcModel(FixedModel):
    def utc_ns(self, raw_ns: int) -> Optional[int]:
        return None


def test_the_session_refuses_what_it_cannot_serve_and_says_so() -> None:
    # A HELLO with tick rate 0 past the codec: dropped and counted, no handshake.
    s = DeviceSession("pty", FixedModel(), codec=_UncheckedCodec())
    s.opened()
    s.received(_hello(tick_hz=0), 0)
    assert s.hello is None and s.bad_frames == 1 and s.state(0) == "handshake"
    # A ping never answered expires: its late PONG is not measured.
    s.received(_hello(), 0)
    seq, _ = s.make_ping(NS)  # type: ignore[misc]
    s.sent(seq, NS)
    s.make_ping(NS + s.ping_timeout_ns + 1)
    assert s.received(frames.encode(frames.Pong(seq, 1_000, 1_010)), NS + s.ping_timeout_ns + 2) == []
    # Quiet for longer than lost_after: "silent".
    assert s.state(NS + s.ping_timeout_ns + 2 + s.lost_after_ns + 1) == "silent"
    # A PONG faster than the line allows (a 24-byte frame each way at 115200 takes 4.2 ms): refused.
    u = DeviceSession("ttyAMA0", FixedModel(), link=links.PROFILES["pl011"], baud=115200)
    u.opened()
    u.received(_hello(), 0)
    assert _ping(u, NS, 1_000_000, 1_000_010, NS + 1_000_000) == []
    assert u.fit is not None and u.fit.rejected == 1 and u.last is None
    # A model without UTC: no TIMESCALE, however good the fit.
    m = DeviceSession("pty", _NoUtcModel())
    m.opened()
    m.received(_hello(), 0)
    for i in range(6):
        _ping(m, (i + 1) * NS, 1_000_000 * (i + 1), 1_000_000 * (i + 1) + 10, (i + 1) * NS + 20_000)
    assert m.fit is not None and m.fit.ready and m.timescale(7 * NS) is None


def test_a_new_link_gives_new_line_minimums() -> None:
    s = DeviceSession("ttyUSB0", FixedModel())
    assert s.line_minimums() == (0, 0)
    s.set_link(links.PROFILES["16550"], 9600)
    out, back = s.line_minimums()
    assert (s.min_out_ns, s.min_back_ns) == (out, back) and s.link.name == "16550" and s.baud == 9600
    # 24 bytes at 9600 baud (1.04 ms each), less the 3 % tolerance. Three times the RX trigger
    # level: the last byte raises the interrupt, no receive timeout.
    assert out == back == int(24 * 1_041_666 * 0.97)
    # A frame that leaves the FIFO part-filled is seen a receive timeout (4 characters) later.
    uart = links.PROFILES["16550"]
    assert uart.fixed_rx_delay_ns(20, 9600) == uart.rx_timeout_ns(9600) == 4_166_666
    assert uart.rx_timeout_ns(0) == 0 and links.PROFILES["ftdi-low"].fixed_rx_delay_ns(20, 9600) == 0


class _SteppedWallClock(FixedModel):
    """A time source running `ppm` from raw: a wall clock a VM host steps, or chrony slewing hard."""

    def __init__(self, ppm: float) -> None:
        super().__init__()
        self.ppm = ppm

    def utc_ns(self, raw_ns: int) -> Optional[int]:
        return raw_ns + self.offset_ns + round(raw_ns * self.ppm / 1e6)


@pytest.mark.parametrize("ppm, sent", [(5000.0, False), (-1200.0, False), (600.0, True)])
def test_a_timescale_the_device_would_refuse_for_its_rate_is_withheld(ppm: float, sent: bool) -> None:
    # The device's ticks follow raw exactly (1 MHz); the time source runs `ppm` from raw. Beyond
    # the ±1000 ppm a device accepts (PROTOCOL.md) the TIMESCALE would be refused: the session
    # withholds it, calls the device unsynchronised and says by how much the source is off.
    s = DeviceSession("pty", _SteppedWallClock(ppm))
    s.opened()
    s.received(_hello(), 0)
    frames_out = []
    for i in range(1, 9):
        t1 = i * NS
        _ping(s, t1, t1 // 1000 + 5, t1 // 1000 + 15, t1 + 20_000)
        frames_out.append(s.make_timescale(t1 + 30_000))
    assert s.fit is not None and s.fit.ready
    now = 8 * NS + 30_000
    st = s.status(now)
    if sent:
        assert frames_out[-1] is not None and s.withheld_ppm is None and st.source_ppm is None
        assert st.state == "synchronised" and s.timescales_withheld == 0
    else:
        assert all(f is None for f in frames_out) and s.last_timescale is None
        assert st.state == "unsynchronised" and s.timescales_withheld > 0
        assert st.source_ppm is not None and abs(st.source_ppm - ppm) < 50, st.source_ppm


def test_the_reply_window_spans_the_recent_round_trips() -> None:
    s = DeviceSession("pty", FixedModel())
    s.opened()
    assert s.reply_window_ns(5_000_000) is None            # no round trip yet: nothing to size it from
    s.received(_hello(), 0)
    # round trips (T4 - T1) of 3.1, 1.3 and 2.0 ms
    _ping(s, NS, 1_000_100, 1_003_000, NS + 3_100_000)
    _ping(s, 2 * NS, 2_000_100, 2_001_000, 2 * NS + 1_300_000)
    _ping(s, 3 * NS, 3_000_100, 3_001_500, 3 * NS + 2_000_000)
    assert s.reply_window_ns(5_000_000) == (1_000_000, 3_400_000)
    assert s.reply_window_ns(most_ns=1_500_000) == (1_000_000, 2_500_000)   # capped in length
    assert s.reply_window_ns(most_ns=0) is None   # switched off
    s2 = DeviceSession("pty", FixedModel())
    s2.opened()
    s2.received(_hello(), 0)
    _ping(s2, NS, 1_000_010, 1_000_020, NS + 60_000)   # a quick pty: the window opens at T1
    assert s2.reply_window_ns(5_000_000) == (0, 360_000)
