"""The serial line models (tsq.testing.seriallink): the rules exactly on the sans-IO model, then the
relay process on real ptys with bounds loose enough for a loaded 2-core machine."""

from __future__ import annotations

import os
import random
import select
import threading
import time
import tty
from typing import List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsq.bridge.links import PROFILES, profile
from tsq.testing.seriallink import LineProcess, LinkModel

MS = 1_000_000
BYTE = profile("pl011").byte_ns(115200)          # 86805 ns at 115200


def _drain(m: LinkModel, until: int) -> Tuple[List[Tuple[int, bytes]], List[Tuple[int, bytes]]]:
    """Everything released by `until`: (to the host, to the device)."""
    up: List[Tuple[int, bytes]] = []
    down: List[Tuple[int, bytes]] = []
    while True:
        t = m.next_release_ns()
        if t > until:
            return up, down
        up += m.due_to_host(t)
        down += m.due_to_device(t)


def _drain_host(m: LinkModel, until: int) -> List[Tuple[int, bytes]]:
    return _drain(m, until)[0]


def _drain_device(m: LinkModel, until: int) -> List[Tuple[int, bytes]]:
    return _drain(m, until)[1]


# --- the rules, exactly ------------------------------------------------------------------------

def test_pl011_trigger_level_and_receive_timeout() -> None:
    m = LinkModel(profile("pl011"), 115200)
    m.to_host(0, bytes(range(25)))
    out = _drain_host(m, 100 * MS)
    assert [len(d) for _, d in out] == [8, 8, 8, 1]
    assert [t for t, _ in out[:3]] == [8 * BYTE, 16 * BYTE, 24 * BYTE]
    # the last byte waits 32 bit times (0.28 ms) after it arrived
    assert out[3][0] == 25 * BYTE + 32 * 10**9 // 115200
    assert out[3][0] - 25 * BYTE > 270_000


def test_16550_timeout_is_four_characters() -> None:
    m = LinkModel(profile("16550"), 115200)
    m.to_host(0, b"abc")
    (t, d), = _drain_host(m, 100 * MS)
    assert d == b"abc" and t == 3 * BYTE + 40 * 10**9 // 115200


def test_ftdi_latency_timer_free_running_and_full_packet() -> None:
    m = LinkModel(profile("ftdi"), 115200, frame_phase_ns=300_000, timer_phase_ns=0)
    m.to_host(MS, bytes(10))                  # bytes in by 1.87 ms; the timer ticks at 16 ms
    assert _drain_host(m, 100 * MS) == [(16 * MS + 300_000, bytes(10))]
    m = LinkModel(profile("ftdi"), 115200, frame_phase_ns=300_000, timer_phase_ns=0)
    data = bytes(range(70))
    m.to_host(0, data)
    out = _drain_host(m, 100 * MS)
    # 62 bytes fill the packet (flushed at once, next frame); the timer restarts there
    assert out == [(6 * MS + 300_000, data[:62]), (22 * MS + 300_000, data[62:])]
    assert 62 * BYTE < 6 * MS < 62 * BYTE + MS


def test_ftdi_timer_from_first_byte_and_low_latency() -> None:
    m = LinkModel(profile("ftdi"), 115200, frame_phase_ns=0, timer_from_first_byte=True)
    m.to_host(0, bytes(10))
    (t, _), = _drain_host(m, 100 * MS)
    assert t == 17 * MS                       # first byte at 0.087 ms + 16 ms, then the next frame
    rng = random.Random(5)
    for _ in range(50):                       # low latency: 1 ms timer + a frame, at most ~2 ms late
        m = LinkModel(profile("ftdi-low"), 115200, frame_phase_ns=rng.randrange(MS),
                      timer_phase_ns=rng.randrange(MS))
        m.to_host(0, bytes(5))
        out = _drain_host(m, 100 * MS)
        assert b"".join(d for _, d in out) == bytes(5)
        assert 5 * BYTE < out[-1][0] <= 5 * BYTE + 3 * MS


def test_ch340_cp210x_receive_timeout_and_packet_size() -> None:
    for name, size in (("ch340", 32), ("cp210x", 64)):
        m = LinkModel(profile(name), 115200, frame_phase_ns=0)
        m.to_host(0, bytes(10))
        (t, _), = _drain_host(m, 100 * MS)
        assert t == 2 * MS                    # 10 bytes + 4 characters of silence = 1.2 ms, next frame
        m = LinkModel(profile(name), 115200, frame_phase_ns=0)
        m.to_host(0, bytes(size + 3))
        out = _drain_host(m, 100 * MS)
        assert [len(d) for _, d in out] == [size, 3]
        assert out[0][0] == -(-(size * BYTE) // MS) * MS


def test_cdc_acm_one_packet_per_frame_no_serialisation() -> None:
    m = LinkModel(profile("cdc-acm"), 115200, frame_phase_ns=250_000)
    m.to_host(100_000, bytes(100))
    assert [(t, len(d)) for t, d in _drain_host(m, 100 * MS)] == [(250_000, 64), (1_250_000, 36)]
    m.to_device(3_000_000, b"ping")
    assert _drain_device(m, 100 * MS) == [(3_250_000, b"ping")]


def test_host_to_device_usb_waits_for_a_frame_then_serialises() -> None:
    m = LinkModel(profile("ftdi-low"), 115200, frame_phase_ns=400_000)
    m.to_device(1_000_000, b"abc")
    out = _drain_device(m, 100 * MS)
    assert out == [(1_400_000 + k * BYTE, bytes((c,))) for k, c in enumerate(b"abc", 1)]
    m = LinkModel(profile("pl011"), 115200)
    m.to_device(5, b"xy")
    assert _drain_device(m, 100 * MS) == [(5 + BYTE, b"x"), (5 + 2 * BYTE, b"y")]


def test_two_flushes_in_one_frame_take_two_frames() -> None:
    m = LinkModel(profile("ch340"), 115200, frame_phase_ns=0)
    m.to_host(0, bytes(64))                   # two full 32-byte packets 2.8 ms apart...
    m2 = LinkModel(profile("cdc-acm"), 115200, frame_phase_ns=0)
    m2.to_host(10, b"a")
    m2.to_host(20, b"b")                      # ...and two writes within one frame
    assert [t for t, _ in _drain_host(m2, 100 * MS)] == [MS, 2 * MS]
    assert len(_drain_host(m, 100 * MS)) == 2


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(PROFILES)), seed=st.integers(0, 2**32),
       writes=st.lists(st.tuples(st.integers(0, 3 * MS), st.binary(min_size=1, max_size=90)),
                       min_size=1, max_size=12))
def test_never_reordered_lost_or_early(name: str, seed: int, writes: List[Tuple[int, bytes]]) -> None:
    rng = random.Random(seed)
    m = LinkModel(profile(name), 115200, frame_phase_ns=rng.randrange(MS), timer_phase_ns=rng.randrange(MS))
    t, up, down, sent = 0, [], [], b""
    for gap, data in writes:
        t += gap
        up += m.due_to_host(t)
        down += m.due_to_device(t)
        m.to_host(t, data)
        m.to_device(t, data[::-1])
        sent += data
    rest_up, rest_down = _drain(m, 10**12)
    up += rest_up
    down += rest_down
    assert b"".join(d for _, d in up) == sent
    assert b"".join(d for _, d in down) == b"".join(d[::-1] for _, d in writes)
    for out in (up, down):
        assert [x for x, _ in out] == sorted(x for x, _ in out)


# --- the relay process on real ptys ------------------------------------------------------------

def _open(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


def _read_exactly(fd: int, n: int, timeout: float = 5.0) -> Tuple[bytes, int]:
    """n bytes, and the monotonic ns when the last of them was read."""
    got, deadline = b"", time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {n} bytes: {got!r}"
        if select.select([fd], [], [], left)[0]:
            got += os.read(fd, n - len(got))
    return got, time.monotonic_ns()


# (link, frame bytes, least delay of its last byte in ms, most delay allowed in ms: model + load)
DELAYS = [("pty", 10, 0.0, 50), ("ftdi", 10, 10 * 0.0868, 17 + 50), ("ftdi-low", 10, 0.868, 3 + 50),
          ("ch340", 10, 0.868 + 0.347, 2.3 + 50), ("cp210x", 10, 0.868 + 0.347, 2.3 + 50),
          ("cdc-acm", 10, 0.0, 1 + 50), ("pl011", 25, 25 * 0.0868 + 0.27, 2.5 + 50),
          ("16550", 25, 25 * 0.0868 + 0.34, 2.6 + 50)]


@pytest.mark.parametrize("link,size,least_ms,most_ms", DELAYS, ids=[d[0] for d in DELAYS])
def test_device_to_host_delay(link: str, size: int, least_ms: float, most_ms: float) -> None:
    with LineProcess(link, seed=7) as lp:
        dev, host = _open(lp.device_path), _open(lp.host_path)
        try:
            delays = []
            for i in range(6):
                frame = bytes((i + k) % 256 for k in range(size))
                t0 = time.monotonic_ns()
                os.write(dev, frame)
                got, t1 = _read_exactly(host, size)
                assert got == frame
                delays.append((t1 - t0) / 1e6)
                time.sleep(0.005 + 0.0031 * i)
        finally:
            os.close(dev)
            os.close(host)
    assert min(delays) >= least_ms, delays
    assert sorted(delays)[len(delays) // 2] <= most_ms, delays
    assert lp.stats["releases"] >= 1 and lp.stats["dropped"] == 0, lp.stats


def test_ftdi_default_timer_holds_short_frames_for_milliseconds() -> None:
    """With the 16 ms timer a short frame waits for a tick of the free-running timer: across frames
    written at spread-out moments some wait several ms, none more than ~17 ms (plus load)."""
    with LineProcess("ftdi", seed=3) as lp:
        dev, host = _open(lp.device_path), _open(lp.host_path)
        try:
            delays = []
            for i in range(8):
                t0 = time.monotonic_ns()
                os.write(dev, b"0123")
                _read_exactly(host, 4)
                delays.append((time.monotonic_ns() - t0) / 1e6)
                time.sleep(0.0053 * (i + 1))
        finally:
            os.close(dev)
            os.close(host)
    assert max(delays) > 3.0, delays
    assert sorted(delays)[len(delays) // 2] < 17 + 30, delays


def test_long_frame_flushes_before_the_latency_timer() -> None:
    with LineProcess("ftdi", seed=11, extra=("--timer-from-first-byte",)) as lp:
        dev, host = _open(lp.device_path), _open(lp.host_path)
        try:
            t0 = time.monotonic_ns()
            os.write(dev, bytes(range(70)))
            got, t62 = _read_exactly(host, 62)
            assert got == bytes(range(62))
            rest, t70 = _read_exactly(host, 8)
            assert rest == bytes(range(62, 70))
        finally:
            os.close(dev)
            os.close(host)
    # the full packet goes at once (62 bytes of serialisation + a frame), the rest after the 16 ms timer
    assert 5.3 <= (t62 - t0) / 1e6 < 16, (t62 - t0) / 1e6
    assert (t70 - t0) / 1e6 >= 5.4 + 16


def test_host_to_device_on_usb_is_frame_aligned() -> None:
    with LineProcess("cdc-acm", seed=5, extra=("--realtime",)) as lp:
        dev, host = _open(lp.device_path), _open(lp.host_path)
        try:
            lags = []
            for i in range(16):
                time.sleep(0.003 + 0.00037 * i)   # writes at moments spread over the frame
                os.write(host, b"x")
                _, t = _read_exactly(dev, 1)
                lags.append((t - lp.frame_phase_ns) % MS // 1000)   # µs after a frame boundary
        finally:
            os.close(dev)
            os.close(host)
    # Released at a boundary, read a wake-up later: at least half cluster in a 200 µs window of the
    # frame (writes spread over the frame and released at once would spread over all 1000 µs).
    best = max(sum(1 for x in lags if (x - start) % 1000 < 200) for start in lags)
    assert best >= 8, sorted(lags)


def test_bidirectional_bulk_is_neither_lost_nor_reordered() -> None:
    rng = random.Random(1)
    up, down = bytes(rng.randrange(256) for _ in range(3000)), bytes(rng.randrange(256) for _ in range(3000))
    with LineProcess("ftdi-low", baud=921600, seed=2) as lp:
        dev, host = _open(lp.device_path), _open(lp.host_path)
        got = {}

        def pump(src: int, dst: int, data: bytes, key: str) -> None:
            for i in range(0, len(data), 100):
                os.write(src, data[i:i + 100])
                time.sleep(0.001)

        def sink(fd: int, n: int, key: str) -> None:
            got[key] = _read_exactly(fd, n, 30)[0]

        threads = [threading.Thread(target=pump, args=(dev, host, up, "up")),
                   threading.Thread(target=pump, args=(host, dev, down, "down")),
                   threading.Thread(target=sink, args=(host, len(up), "up")),
                   threading.Thread(target=sink, args=(dev, len(down), "down"))]
        try:
            for th in threads:
                th.start()
            for th in threads:
                th.join(40)
        finally:
            os.close(dev)
            os.close(host)
    assert got.get("up") == up and got.get("down") == down
    assert lp.stats["dropped"] == 0


def test_process_exits_cleanly_and_reports_its_release_error() -> None:
    lp = LineProcess("pl011", seed=1).start()
    assert os.path.exists(lp.device_path) and os.path.exists(lp.host_path)
    dev, host = _open(lp.device_path), _open(lp.host_path)
    try:
        os.write(dev, b"hello")
        assert _read_exactly(host, 5)[0] == b"hello"
    finally:
        os.close(dev)
        os.close(host)
    proc = lp.proc
    stats = lp.stop()
    assert proc is not None and proc.returncode == 0
    assert stats["releases"] == 1 and stats["p50_us"] >= 0 and stats["max_us"] < 1e6
