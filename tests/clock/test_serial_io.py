"""wait_readable_stamped / write_stamped: stamped I/O on real file descriptors (pipes and a pty)."""

from __future__ import annotations

import array
import os
import pty
import threading
import time
from types import ModuleType

import pytest

GENEROUS_NS = 50_000_000  # loaded 2-core CI


def raw() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)


def test_write_stamped_stamps_before_the_write_and_writes_everything(backend: ModuleType) -> None:
    r, w = os.pipe()
    try:
        before = raw()
        n, t1 = backend.write_stamped(w, b"hello")
        after = raw()
        assert n == 5 and before <= t1 <= after
        assert os.read(r, 16) == b"hello"
        n, _ = backend.write_stamped(w, memoryview(b"xyz")[1:])
        assert n == 2 and os.read(r, 16) == b"yz"
        assert backend.write_stamped(w, b"")[0] == 0
    finally:
        os.close(r)
        os.close(w)


def test_write_stamped_raises_oserror_with_errno(backend: ModuleType) -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        with pytest.raises(BlockingIOError):
            for _ in range(1000):                     # fill the pipe: EAGAIN, not a hang
                backend.write_stamped(w, b"x" * 65536)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError) as info:
        backend.write_stamped(w, b"x")                # closed fd
    assert info.value.errno is not None


def test_wait_readable_stamps_the_arrival_not_the_caller(backend: ModuleType) -> None:
    master, slave = pty.openpty()
    wake_r, wake_w = os.pipe()
    try:
        assert backend.wait_readable_stamped(master, wake_r, 0)[:2] == (0, 0)   # nothing yet
        sent: list[int] = []

        def later() -> None:
            time.sleep(0.05)
            sent.append(raw())
            os.write(slave, b"ping")

        th = threading.Thread(target=later)
        th.start()
        port_ev, wake_ev, t4 = backend.wait_readable_stamped(master, wake_r, 5000)
        th.join()
        assert port_ev and not wake_ev
        assert sent[0] <= t4 <= sent[0] + GENEROUS_NS
        assert os.read(master, 16) == b"ping"
        os.write(wake_w, b"x")                        # the wake-up pipe is reported on its own
        port_ev, wake_ev, _ = backend.wait_readable_stamped(master, wake_r, 5000)
        assert wake_ev and not port_ev
        before = raw()
        assert backend.wait_readable_stamped(master, -1, 30)[:2] == (0, 0)      # timeout
        assert raw() - before >= 25_000_000
    finally:
        for fd in (master, slave, wake_r, wake_w):
            os.close(fd)


def test_wait_readable_spins_in_its_window_then_sleeps(backend: ModuleType) -> None:
    r, w = os.pipe()
    try:
        # Nothing arrives: it polls through the window (starting up to 1 ms early), then sleeps
        # out the timeout; a window already past changes nothing.
        start = raw()
        assert backend.wait_readable_stamped(r, -1, 20, start + 30_000_000, start + 10_000_000)[:2] == (0, 0)
        assert raw() - start >= 49_000_000
        start = raw()
        assert backend.wait_readable_stamped(r, -1, 20, start - 1, start - 2)[:2] == (0, 0)
        assert raw() - start >= 19_000_000
        # Data in the window: returned at once, stamped as it came; before the window: the same.
        sent: list[int] = []

        def later(delay_s: float) -> None:
            time.sleep(delay_s)
            sent.append(raw())
            os.write(w, b"p")

        for delay_s, spin_from_ms in ((0.03, 20), (0.005, 40)):
            sent.clear()
            start = raw()
            th = threading.Thread(target=later, args=(delay_s,))
            th.start()
            ev, _, t4 = backend.wait_readable_stamped(r, -1, 5000, start + 2_000_000_000,
                                                      start + spin_from_ms * 1_000_000)
            th.join()
            assert ev and sent[0] <= t4 <= sent[0] + GENEROUS_NS
            assert raw() - start < 1_000_000_000      # not held to the end of the window
            assert os.read(r, 4) == b"p"
    finally:
        os.close(r)
        os.close(w)


def test_wait_readable_reports_a_hang_up(backend: ModuleType) -> None:
    master, slave = pty.openpty()
    os.close(slave)                                   # the far end went away
    try:
        port_ev, _, _ = backend.wait_readable_stamped(master, -1, 1000)
        assert port_ev                                # POLLHUP: the caller's read then fails
    finally:
        os.close(master)


def test_write_stamped_takes_any_contiguous_buffer(backend: ModuleType) -> None:
    r, w = os.pipe()
    try:
        n, _ = backend.write_stamped(w, array.array("H", [1, 2]))  # bytes, whatever the item format
        assert n == 4 and len(os.read(r, 16)) == 4
        n, _ = backend.write_stamped(w, bytearray(b"ab"))
        assert n == 2 and os.read(r, 16) == b"ab"
        for bad in ("text", 5, None):
            with pytest.raises(TypeError):
                backend.write_stamped(w, bad)
    finally:
        os.close(r)
        os.close(w)
