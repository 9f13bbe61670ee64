"""PortLink over real ptys: stamped reads, stamped writes, unplug and replug through a symlink; and
ports that cannot be opened (real files, directories, missing paths, a pty as an unprivileged user,
a pty held by another process), each with its errno, reason and hint."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tsq.bridge.port import Backoff, PortError, PortLink, SerialPort
from tsq.bridge.portinfo import OpenProblem
from tsq.bridge.status import PortStatus
from tsq.clock import raw_ns


def _new_pty(link: str) -> tuple[int, str]:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)  # the bridge opens the slave by path, like a USB serial node
    tmp = link + ".new"
    os.symlink(name, tmp)
    os.replace(tmp, link)
    return master, name


def _read_exact(fd: int, n: int, timeout: float = 5.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(fd, False)
    while len(out) < n and time.monotonic() < deadline:
        try:
            out += os.read(fd, n - len(out))
        except BlockingIOError:
            time.sleep(0.001)
    return out


def test_read_write_and_replug() -> None:
    async def main() -> None:
        d = tempfile.mkdtemp()
        link = os.path.join(d, "ttyDEV")
        master, _ = _new_pty(link)
        got: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
        events: list[str] = []
        pl = PortLink(link, 115200, on_data=lambda b, t: got.put_nowait((b, t)),
                      on_open=lambda: events.append("open"), on_close=lambda r: events.append("close"),
                      backoff=Backoff(0.01, 0.05))
        task = asyncio.create_task(pl.run())
        await asyncio.wait_for(pl.wait_connected(), 5)
        before = raw_ns()
        t1 = await pl.send(b"hello")
        assert t1 is not None and t1 >= before
        assert await asyncio.get_running_loop().run_in_executor(None, _read_exact, master, 5) == b"hello"
        before = raw_ns()
        os.write(master, b"world")
        data, t4 = await asyncio.wait_for(got.get(), 5)
        assert data == b"world" and before <= t4 <= raw_ns()
        # Unplug: the device side closes, the node vanishes; the link notices and retries.
        os.close(master)
        for _ in range(500):
            if not pl.connected:
                break
            await asyncio.sleep(0.01)
        assert not pl.connected
        assert await pl.send(b"x") is None
        await asyncio.sleep(0.1)  # a few failed reopen attempts with backoff
        master, _ = _new_pty(link)
        await asyncio.wait_for(pl.wait_connected(), 5)
        os.write(master, b"again")
        data, _ = await asyncio.wait_for(got.get(), 5)
        assert data == b"again"
        assert events[:3] == ["open", "close", "open"] and pl.opens == 2
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        os.close(master)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_reply_window_keeps_the_port_working_and_stamps_the_reply() -> None:
    """`send(..., reply_window)`: the reader is nudged awake (a byte on its wake-up pipe that must
    not close the port) and polls through the window; a reply inside it is delivered with its
    arrival stamp, and once the window is over the reader sleeps again and still reads."""
    async def main() -> None:
        d = tempfile.mkdtemp()
        link = os.path.join(d, "ttyDEV")
        master, _ = _new_pty(link)
        got: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
        pl = PortLink(link, 115200, on_data=lambda b, t: got.put_nowait((b, t)), backoff=Backoff(0.01, 0.05))
        task = asyncio.create_task(pl.run())
        await asyncio.wait_for(pl.wait_connected(), 5)
        loop = asyncio.get_running_loop()
        for _ in range(3):
            t1 = await pl.send(b"ping", reply_window=(0, 200_000_000))
            assert t1 is not None
            assert await loop.run_in_executor(None, _read_exact, master, 4) == b"ping"
            before = raw_ns()
            os.write(master, b"pong")
            data, t4 = await asyncio.wait_for(got.get(), 5)
            assert data == b"pong" and before <= t4 <= raw_ns()
        await asyncio.sleep(0.25)                     # the window has closed
        assert pl.connected and pl.opens == 1
        # A window opened while the reader sleeps after an expired one is taken up, not wiped by
        # the wake-up it causes (the race of --single-ping, where no warm-up PONG comes between).
        for _ in range(3):
            assert await pl.send(b"ping", reply_window=(0, 10_000_000)) is not None
            assert pl._spinning.is_set()
            assert await loop.run_in_executor(None, _read_exact, master, 4) == b"ping"
            await asyncio.sleep(0.05)
        os.write(master, b"later")
        data, _ = await asyncio.wait_for(got.get(), 5)
        assert data == b"later"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        os.close(master)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_hundred_unplug_replug_cycles() -> None:
    """100 times: the node vanishes (pty closed), a new one appears under the same name; data flows."""

    async def main() -> int:
        d = tempfile.mkdtemp()
        link = os.path.join(d, "ttyDEV")
        master, _ = _new_pty(link)
        got: asyncio.Queue[bytes] = asyncio.Queue()
        pl = PortLink(link, 115200, on_data=lambda b, t: got.put_nowait(b), backoff=Backoff(0.002, 0.02))
        task = asyncio.create_task(pl.run())
        loop = asyncio.get_running_loop()
        try:
            for i in range(100):
                await asyncio.wait_for(pl.wait_connected(), 5)
                msg = b"cycle %d" % i
                os.write(master, msg)
                assert await asyncio.wait_for(got.get(), 5) == msg
                assert await pl.send(msg) is not None
                assert await loop.run_in_executor(None, _read_exact, master, len(msg)) == msg
                os.close(master)
                while pl.connected:
                    await asyncio.sleep(0.001)
                master, _ = _new_pty(link)
            return pl.opens
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            os.close(master)

    t0 = time.monotonic()
    opens = asyncio.run(asyncio.wait_for(main(), 60))
    assert opens >= 100
    assert time.monotonic() - t0 < 60


def _open_problem(path: str, by_id_dir: str = "/nonexistent/by-id") -> OpenProblem:
    port = SerialPort(path, by_id_dir=by_id_dir)
    with pytest.raises(PortError) as info:
        port.open()
    assert port.fd == -1
    return info.value.problem


def test_missing_port_says_plug_it_in_and_lists_by_id(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (tmp_path / "ttyUSB1").write_text("")
    (by_id / "usb-Silicon_Labs_CP2102N_0001-if00-port0").symlink_to(tmp_path / "ttyUSB1")
    p = _open_problem(str(tmp_path / "ttyUSB0"), str(by_id))
    assert p.errno == errno.ENOENT and p.reason == f"{tmp_path / 'ttyUSB0'}: no such device"
    assert p.hint.startswith("is it plugged in? attached: ")
    assert f"{by_id}/usb-Silicon_Labs_CP2102N_0001-if00-port0 -> ttyUSB1" in p.hint
    (by_id / "usb-gone").symlink_to(tmp_path / "ttyUSB9")   # a by-id link whose node went away
    p = _open_problem(str(by_id / "usb-gone"), str(tmp_path / "empty"))
    assert p.errno == errno.ENOENT and f"a link to {tmp_path / 'ttyUSB9'}, which is not there" in p.reason
    assert "no serial adapter is attached" in p.hint


def test_regular_file_directory_and_non_tty_device_are_not_serial_ports(tmp_path: Path) -> None:
    (tmp_path / "capture.bin").write_bytes(b"\x00" * 10)
    p = _open_problem(str(tmp_path / "capture.bin"))
    assert p.errno == errno.ENOTTY
    assert p.reason == f"{tmp_path / 'capture.bin'}: not a serial port (a regular file)"
    assert "/dev/serial/by-id/" in p.hint
    p = _open_problem(str(tmp_path))
    assert (p.errno, p.reason) == (errno.ENOTTY, f"{tmp_path}: not a serial port (a directory)")
    # A character device that is no terminal: pyserial opens it and fails to configure it.
    p = _open_problem("/dev/null")
    assert p.errno == errno.ENOTTY and "not a terminal" in p.reason, p


def _chowned_pty(mode: int, gid: int) -> tuple[int, int, str]:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.chown(name, 0, gid)
    os.chmod(name, mode)
    return master, slave, name


def test_permission_denied_names_the_group_and_the_command(as_nobody: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a pty away from this user (and to become nobody)")
    dialout = 20
    for mode, expect in ((0o660, "add the user to the dialout group: sudo usermod -aG dialout nobody, "
                                 "then log in again"),
                         (0o000, "no group may read and write it")):
        master, slave, name = _chowned_pty(mode, dialout)
        try:
            p = as_nobody(lambda name=name: _open_problem(name))
        finally:
            os.close(slave)
            os.close(master)
        assert (p.errno, p.reason) == (errno.EACCES, f"{name}: permission denied"), p
        assert expect in p.hint and "group dialout" in p.hint, p.hint


def test_busy_port_names_the_process_holding_it() -> None:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({name!r}, os.O_RDWR | os.O_NOCTTY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as pyserial's exclusive=True, minicom\n"
         "print('held', flush=True)\ntime.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        p = _open_problem(name)
        assert p.errno in (errno.EAGAIN, errno.EBUSY) and p.reason == f"{name}: busy", p
        assert f"(pid {holder.pid}) has it open" in p.hint, p.hint
    finally:
        holder.kill()
        holder.wait()
        os.close(slave)
        os.close(master)
    # Released: the same port opens (and a pty is no place for low latency).
    master, slave = os.openpty()
    try:
        port = SerialPort(os.ttyname(slave))
        port.open()
        assert port.low_latency == "not applicable (pty)" and port.info is not None and port.info.is_pty
        port.close()
    finally:
        os.close(slave)
        os.close(master)


def test_portlink_says_each_reason_once_then_opens(caplog: pytest.LogCaptureFixture) -> None:
    """Retried every few ms, a missing port is logged once; a new reason once more; then it opens,
    and its diagnostics say the link and the low-latency outcome."""
    caplog.set_level(logging.INFO, logger="tsq.bridge")

    path = os.path.join(tempfile.mkdtemp(), "ttyDEV")

    async def main() -> None:
        d = os.path.dirname(path)
        pl = PortLink(path, 115200, on_data=lambda b, t: None, backoff=Backoff(0.005, 0.01),
                      by_id_dir=os.path.join(d, "by-id"))
        task = asyncio.create_task(pl.run())
        try:
            while pl.open_failures < 10:
                await asyncio.sleep(0.01)
            diag = pl.port_status()
            assert diag.port_error == f"{path}: no such device" and "plugged in" in (diag.port_hint or "")
            Path(path).write_text("")
            failures = pl.open_failures
            while pl.open_failures < failures + 10:
                await asyncio.sleep(0.01)
            assert pl.port_status().port_error == f"{path}: not a serial port (a regular file)"
            os.unlink(path)
            master, _ = _new_pty(path)
            await asyncio.wait_for(pl.wait_connected(), 5)
            assert pl.port_status() == PortStatus("pty", "not applicable (pty)", None, None)
            os.close(master)
            while pl.connected:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(asyncio.wait_for(main(), 30))
    lines = [r.getMessage() for r in caplog.records if r.name == "tsq.bridge"]
    assert sum(f"{path}: no such device: is it plugged in?" in m for m in lines) == 1, lines
    assert sum("not a serial port (a regular file)" in m for m in lines) == 1, lines
    opened = [m for m in lines if ": opened at 115200 baud, link pty (detected: pty)" in m]
    assert len(opened) == 1 and "low latency not applicable (pty)" in opened[0], lines
    assert sum(m == f"{path}: lost (hang-up)" for m in lines) == 1, lines
