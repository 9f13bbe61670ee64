"""NMEA mode end to end: sentence timing over a pty, and gpsd (Debian's) reading the bridge's output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tsq.bridge import nmea
from tsq.bridge.service import Bridge, BridgeConfig
from tsq.gateway.systemmodel import SystemClockModel


def test_sentences_start_at_top_of_second() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)  # kept open by the test: a master reads EIO while no slave is open

    async def main() -> list[tuple[int, bytes]]:
        bridge = Bridge(BridgeConfig([path], nmea=True), SystemClockModel(assume_bound_ns=1_000_000))
        task = asyncio.create_task(bridge.run())
        loop = asyncio.get_running_loop()

        def collect() -> list[tuple[int, bytes]]:
            # (realtime when the burst's first bytes arrived, the burst)
            out: list[tuple[int, bytes]] = []
            buf = b""
            deadline = time.monotonic() + 8
            while len(out) < 4 and time.monotonic() < deadline:
                import select
                r, _, _ = select.select([master], [], [], 0.5)
                if not r:
                    continue
                t = time.time_ns()
                chunk = os.read(master, 4096)
                if not buf:
                    start = t
                buf += chunk
                while b"\r\n" in buf and buf.count(b"\r\n") >= 2:
                    a, b_, rest = buf.split(b"\r\n", 2)
                    out.append((start, a + b"\r\n" + b_ + b"\r\n"))
                    buf = rest
                    start = t
            return out

        try:
            return await loop.run_in_executor(None, collect)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    bursts = asyncio.run(main())
    os.close(master)
    os.close(slave)
    assert len(bursts) >= 3
    errors = []
    for arrived, burst in bursts[1:]:
        zda, rmc = burst.split(b"\r\n")[:2]
        fz = nmea.parse_sentence(zda)
        fr = nmea.parse_sentence(rmc)
        assert fz[0] == "GPZDA" and fr[0] == "GPRMC" and fr[2] == "A" and fz[1] == fr[1]
        hh, mm, ss = int(fz[1][:2]), int(fz[1][2:4]), int(fz[1][4:6])
        second = arrived // 1_000_000_000
        t = time.gmtime(second)
        assert (t.tm_hour, t.tm_min, t.tm_sec) == (hh, mm, ss)
        errors.append(arrived - second * 1_000_000_000)
    # Generous for a loaded 2-core CI machine; typically well under a millisecond.
    assert max(errors) < 50_000_000, errors


@pytest.mark.skipif(shutil.which("gpsd") is None or shutil.which("socat") is None,
                    reason="needs Debian's gpsd and socat")
def test_gpsd_recognises_bridge_output() -> None:
    d = tempfile.mkdtemp()
    a, b = os.path.join(d, "bridge-end"), os.path.join(d, "gps-end")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"]))
        deadline = time.monotonic() + 10
        while not (os.path.exists(a) and os.path.exists(b)) and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tsq.bridge", a, "--nmea", "--source", "system",
             "--assume-bound", "1000000", "--control", os.path.join(d, "control.sock")]))
        # gpsd: foreground, no clock hooks of any kind (no SHM, no chrony socket), local port only.
        procs.append(subprocess.Popen(
            ["gpsd", "-N", "-n", "-b", "-S", str(port), "-F", os.path.join(d, "gpsd.sock"), b],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        tpv, device = _watch_gpsd(port, timeout=20)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    assert device.get("driver") == "NMEA0183"
    reported = tpv["time"]
    now = time.time()
    got = time.mktime(time.strptime(reported[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(got - now) < 5, (reported, now)
    assert reported.endswith(".000Z")


def _watch_gpsd(port: int, timeout: float) -> tuple[dict[str, object], dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    device: dict[str, object] = {}
    with sock:
        sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
        buf = b""
        sock.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("class") == "DEVICE" and msg.get("driver"):
                    device = msg
                if msg.get("class") == "TPV" and "time" in msg and device:
                    return msg, device
    raise AssertionError("gpsd reported no TPV with a time from the bridge")
