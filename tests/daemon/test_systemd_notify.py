"""sd_notify from a real `tsq sync` (issue 15): READY=1 with the tracking line once synchronised,
WATCHDOG=1 when asked, STOPPING=1 on SIGTERM — through a real AF_UNIX datagram socket, as systemd's."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import List

import pytest

from tsq.gateway.notify import SystemdNotifier
from tsq.testing.certs import TestPki, make_pki
from tsq.testing.daemon import ServerProcess, SyncProcess


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _read(sock: socket.socket, until: str, timeout: float) -> List[str]:
    got: List[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(sock.recv(65536).decode())
        except socket.timeout:
            break
        if any(until in m for m in got):
            break
    return got


def test_notifier_is_silent_without_systemd() -> None:
    n = SystemdNotifier({})
    assert not n.enabled and not n.send("READY=1")


def test_reload_is_announced_only_once_ready(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = SystemdNotifier({"NOTIFY_SOCKET": path})
        # still starting: a reload must not say READY=1 (that means synchronised or timed out)
        assert not n.reloading()
        n.reloaded("reloaded")
        assert _read(sock, "STATUS", 2) == ["STATUS=reloaded"]
        n.ready("synchronised")
        assert n.reloading()
        n.reloaded("reloaded")
        msgs = _read(sock, "STATUS=reloaded", 2)
        assert msgs[0].startswith("READY=1") and msgs[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert msgs[2] == "READY=1\nSTATUS=reloaded"


def test_abstract_and_watchdog_settings_are_read() -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": "@tsq-test", "WATCHDOG_USEC": "30000000"})
    assert n.address == "\0tsq-test" and n.watchdog_s == 15.0
    other_pid = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}
    assert SystemdNotifier(other_pid).watchdog_s is None


def test_sync_says_ready_when_synchronised_and_stopping_on_sigterm(
        pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        with ServerProcess(pki) as server:
            sync = SyncProcess([server.address], str(tmp_path), ca=pki.ca_cert)
            try:
                msgs = _read(sock, "READY=1", 30)
                ready = [m for m in msgs if "READY=1" in m]
                assert ready, msgs
                assert "STATUS=" in ready[0] and "synchronised" in ready[0]
                assert sync.status()["state"] == "synchronised"
                assert any("WATCHDOG=1" in m for m in _read(sock, "WATCHDOG=1", 5))
                # SIGHUP: RELOADING=1 then READY=1 again, or systemd holds `systemctl reload` until
                # its timeout (seen under a real systemd, .ci/systemd-lane)
                sync.signal(signal.SIGHUP)
                msgs = _read(sock, "READY=1", 10)
                at = [i for i, m in enumerate(msgs) if "RELOADING=1" in m]
                assert at and "MONOTONIC_USEC=" in msgs[at[0]], msgs
                assert any("READY=1" in m for m in msgs[at[0] + 1:]), msgs
            finally:
                sync.stop()
            assert any("STOPPING=1" in m for m in _read(sock, "STOPPING=1", 5))
