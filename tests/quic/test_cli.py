"""`tsq server` and `tsq query` as real processes on loopback."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from typing import Iterator, List, Tuple

import pytest

from tsq.testing.certs import TestPki, make_pki

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start_server(args: List[str]) -> Tuple[subprocess.Popen[str], int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tsq", "server", "--listen", "127.0.0.1:0", "--ephemeral",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    pin, port = "", 0
    deadline = time.monotonic() + 30
    while not port and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"pin (sha256/\S+)", line):
            pin = m.group(1)
        if m := re.search(r"listening on \S+:(\d+)", line):
            port = int(m.group(1))
    if not port:
        proc.kill()
        raise AssertionError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, port, pin


def tsq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsq", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def ephemeral() -> Iterator[Tuple[int, str]]:
    proc, port, pin = start_server(["--metadata", "site=lab", "--stratum", "1", "--source-type", "gps"])
    yield port, pin
    proc.terminate()
    proc.wait(10)


def test_ephemeral_server_prints_a_pin_and_query_json_uses_it(ephemeral: Tuple[int, str]) -> None:
    port, pin = ephemeral
    assert pin.startswith("sha256/")
    out = tsq("query", f"127.0.0.1:{port}", "--pin", pin, "--count", "3", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    exchanges = [r for r in rows if not r.get("summary")]
    summary = [r for r in rows if r.get("summary")]
    assert len(exchanges) == 3 and len(summary) == 1
    for r in exchanges:
        assert r["server"] == f"127.0.0.1:{port}" and r["mode"] == "datagram"
        assert r["delay_ns"] > 0 and abs(r["offset_ns"]) < 5_000_000
    assert summary[0]["samples"] == 3 and summary[0]["metadata"] == {"site": "lab"}
    assert {"offset_ns", "delay_ns"} <= set(summary[0])


def test_query_text_stream_mode(ephemeral: Tuple[int, str]) -> None:
    port, pin = ephemeral
    out = tsq("query", f"127.0.0.1:{port}", "--pin", pin, "--count", "2", "--mode", "stream")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(" stream " in line for line in lines) == 2
    assert "site=lab" in lines[-1] and "alpn=tsq" in lines[-1]


def test_query_insecure_warns(ephemeral: Tuple[int, str]) -> None:
    out = tsq("query", f"127.0.0.1:{ephemeral[0]}", "--insecure", "--count", "1")
    assert out.returncode == 0 and "WARNING" in out.stderr


def test_query_without_trust_fails_clearly(ephemeral: Tuple[int, str]) -> None:
    out = tsq("query", f"127.0.0.1:{ephemeral[0]}", "--count", "2")
    assert out.returncode != 0
    assert "handshake failed" in out.stderr and "no valid sample" in out.stderr


def test_query_unreachable_exits_nonzero() -> None:
    out = tsq("query", "127.0.0.1:9", "--insecure", "--count", "2", "--timeout", "0.3")
    assert out.returncode == 1
    assert "no valid sample" in out.stderr


def test_server_with_ca_signed_cert_and_signing_key(tmp_path: os.PathLike[str]) -> None:
    pki: TestPki = make_pki(str(tmp_path))
    secret = os.path.join(str(tmp_path), "hmac.key")
    with open(secret, "w") as fh:
        fh.write("hmac:" + "ab" * 32 + "\n")
    proc, port, _ = start_server(["--cert", pki.server_cert, "--key", pki.server_key,
                                  "--sign-key", secret, "--key-id", "9"])
    try:
        out = tsq("query", f"localhost:{port}", "--ca", pki.ca_cert, "--count", "2", "--json",
                  "--require-signature", "--verify-key", secret, "--key-id", "9")
        assert out.returncode == 0, out.stderr
        wrong = os.path.join(str(tmp_path), "wrong.key")
        with open(wrong, "w") as fh:
            fh.write("hmac:" + "cd" * 32 + "\n")
        bad = tsq("query", f"localhost:{port}", "--ca", pki.ca_cert, "--count", "2",
                  "--require-signature", "--verify-key", wrong, "--key-id", "9")
        assert bad.returncode == 1 and "signature verification failed" in bad.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_server_rejects_bad_options() -> None:
    out = subprocess.run([sys.executable, "-m", "tsq", "server", "--ephemeral", "--clock", "sundial"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "sundial" in out.stderr


def test_workers_share_the_port_and_stop_together() -> None:
    proc, port, pin = start_server(["--workers", "2", "--stats-interval", "0"])
    try:
        for _ in range(3):
            out = tsq("query", f"127.0.0.1:{port}", "--pin", pin, "--count", "1")
            assert out.returncode == 0, out.stderr
    finally:
        proc.terminate()
        proc.wait(20)
    out = tsq("query", f"127.0.0.1:{port}", "--pin", pin, "--count", "2", "--timeout", "0.3")
    assert out.returncode == 1  # every worker is gone


# ------------------------------------------------------------------ options for the open internet
def test_uvloop_without_user_stamps_is_refused_clearly() -> None:
    out = subprocess.run([sys.executable, "-m", "tsq", "server", "--listen", "127.0.0.1:0", "--ephemeral",
                          "--uvloop"], capture_output=True, text=True, cwd=ROOT, timeout=60)
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
