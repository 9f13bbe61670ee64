"""`tsq server` options added for the open internet, as real processes on loopback."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.quic.test_cli import ROOT, start_server, tsq


def test_uvloop_without_user_stamps_is_refused_clearly() -> None:
    out = subprocess.run([sys.executable, "-m", "tsq.server", "--listen", "127.0.0.1:0", "--uvloop"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "--uvloop needs --user-stamps" in out.stderr


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_uvloop_with_user_stamps_serves() -> None:
    proc, port, pin = start_server(["--uvloop", "--user-stamps", "--stats-interval", "0"])
    try:
        out = tsq("query", f"127.0.0.1:{port}", "--pin", pin, "--count", "2")
        assert out.returncode == 0, out.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_workers_and_idle_timeout_serve_new_clients_through_retry() -> None:
    proc, port, pin = start_server(["--workers", "2", "--idle-timeout", "30", "--stats-interval", "0"])
    try:
        for _ in range(4):   # new client ports: the kernel spreads them over both workers
            out = tsq("query", f"127.0.0.1:{port}", "--pin", pin, "--count", "1")
            assert out.returncode == 0, out.stderr
    finally:
        proc.terminate()
        proc.wait(20)
