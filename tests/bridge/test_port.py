"""PortLink over real ptys: stamped reads, stamped writes, unplug and replug through a symlink."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time

from tsq.bridge.port import Backoff, PortLink
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
