"""The server's persistent identity (a stable pin across restarts) and `tsq pin` (issue 15)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tsq.quic.identity import load_or_create
from tsq.quic.server import ServerConfig, ServerThread, load_pem_pair
from tsq.testing.certs import TestPki
from tsq.testing.daemon import ServerProcess, subprocess_env


def _tsq(args: List[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsq", *args], capture_output=True, text=True, timeout=60,
                          env=subprocess_env())


def test_identity_is_made_once_and_reused(tmp_path: Path) -> None:
    cert, key, pin, created = load_or_create(tmp_path / "state")
    assert created
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "key.pem").st_mode) == 0o600
    again = load_or_create(tmp_path / "state")
    assert again == (cert, key, pin, False)
    assert not [p for p in (tmp_path / "state").iterdir() if p.name.startswith(".")]  # no temp files


def test_pin_of_a_file_and_of_a_live_server(pki: TestPki) -> None:
    out = _tsq(["pin", pki.server_cert])
    assert out.returncode == 0 and out.stdout.split()[0] == pki.server_pin
    cert, key = load_pem_pair(pki.server_cert, pki.server_key)
    with ServerThread(ServerConfig(cert_pem=cert, key_pem=key, host="127.0.0.1", port=0)) as srv:
        live = _tsq(["pin", f"127.0.0.1:{srv.port}"])
    assert live.returncode == 0 and live.stdout.split()[0] == pki.server_pin
    assert "without verification" in live.stderr


@pytest.mark.parametrize("target,code", [("127.0.0.1:notaport", 2), ("127.0.0.1:9", 1)])
def test_pin_errors_are_one_line(target: str, code: int) -> None:
    out = _tsq(["pin", target, "--timeout", "1"])
    assert out.returncode == code and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_tsq_server_keeps_its_pin_across_restarts(tmp_path: Path, pki: TestPki) -> None:
    pins = []
    for _ in range(2):
        proc = ServerProcess.without_certificate(str(tmp_path / "state"))
        with proc:
            pins.append(proc.pin)
            live = _tsq(["pin", proc.address])
        assert live.stdout.split()[0] == proc.pin
    assert pins[0] == pins[1] and pins[0].startswith("sha256/")
