"""`tsq bridge` as a process: the start line, a reason and a hint per port that cannot be opened
(logged once, in `tsq status` too), the link and low-latency outcome of one that opens, and a
device frame with nonsense fields dropped and counted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

from tsq.bridge import frames
from tsq.gateway.control import ControlError, query_status
from tsq.testing.daemon import _Proc, subprocess_env


def _status(sock: str, cond: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = query_status(sock, timeout_s=2.0)
            if cond(last):
                return dict(last)
        except ControlError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"status never matched: {last}")


def test_bridge_says_why_ports_fail_in_the_log_and_in_tsq_status() -> None:
    d = tempfile.mkdtemp()
    missing, plain, pty_link = (os.path.join(d, n) for n in ("ttyUSB0", "capture.bin", "ttyDEV"))
    with open(plain, "w"):
        pass
    master, slave = os.openpty()
    os.symlink(os.ttyname(slave), pty_link)
    sock = os.path.join(d, "control.sock")
    proc = _Proc([sys.executable, "-m", "tsq", "bridge", missing, plain, pty_link, "--source", "system",
                  "--assume-bound", "1000", "--control", sock])
    try:
        proc.wait_line(re.compile(r"tsq\.bridge: bridge: 3 port\(s\) at 115200 baud, binary protocol: "),
                       20)
        opened = (f"{pty_link} ({os.ttyname(slave)}): opened at 115200 baud, link pty (detected: pty), "
                  "low latency not applicable (pty)")
        proc.wait_line(re.compile(re.escape(opened)), 20)
        for hz in (0, 7):
            os.write(master, frames.encode(frames.Hello(1, 0xBAD, (1, 0, 0), 1, hz, 0)))
        st = _status(sock, lambda s: any(x.get("implausible_frames") == 2 for x in s.get("devices", [])))
        by_port = {x["port"]: x for x in st["devices"]}
        assert by_port[missing]["port_error"] == f"{missing}: no such device"
        assert by_port[missing]["port_hint"].startswith("is it plugged in?")
        assert by_port[plain]["port_error"] == f"{plain}: not a serial port (a regular file)"
        assert by_port[pty_link]["state"] == "handshake" and by_port[pty_link]["device"] is None
        assert by_port[pty_link]["link"] == "pty" and by_port[pty_link]["port_error"] is None
        time.sleep(0.5)   # many more retries at 50 ms: still one line per reason
        shown = subprocess.run([sys.executable, "-m", "tsq", "status", "--control", sock],
                               capture_output=True, text=True, env=subprocess_env(), timeout=30)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert f"  ! {missing}: no such device\n    is it plugged in?" in out, out
        assert f"  ! {plain}: not a serial port (a regular file)\n" in out, out
        assert "  link pty, low latency not applicable (pty), 2 frame(s) with nonsense fields dropped" in out
    finally:
        proc.stop()
        os.close(master)
        os.close(slave)
    log = proc.output
    assert log.count(f"{missing}: no such device") == 1, log
    assert log.count(f"{plain}: not a serial port") == 1, log
    assert log.count("dropped ") == 1, log   # both in one read, or the second within 10 s
    assert re.search(r"dropped [12] device frame\(s\), the last: HELLO tick rate (0|7) Hz outside 1000",
                     log), log
    assert "Traceback" not in log, log


def test_link_flag_reaches_the_bridge_config_from_the_gateway() -> None:
    import argparse

    from tsq.gateway.app import bridge_config
    from tsq.gateway.gateway_cli import add_device_arguments
    from tsq.gateway.settings import SyncConfig
    from tsq.gateway.sync_cli import flag_values

    p = argparse.ArgumentParser()
    add_device_arguments(p, "ports")
    assert flag_values(p.parse_args(["/dev/ttyUSB0", "--link", "cp210x"]))["link"] == "cp210x"
    assert "link" not in flag_values(p.parse_args(["/dev/ttyUSB0"]))   # not given: the file's stands
    assert bridge_config(SyncConfig(servers=[], ports=["/dev/ttyUSB0"], link="cp210x")).link == "cp210x"
    cfg = bridge_config(SyncConfig(servers=[], ports=["/dev/ttyUSB0"]))
    assert cfg.link == "auto" and cfg.source == "this host's clock"
