"""Interop with peers that behave like the TSQ implementation deployed in the wild (tsq.testing.peers):
its client never sends FIN, its server holds FIN for seconds, it speaks only tsq/1 and streams.
Real processes both ways: `tsq server`, `tsq query` and `tsq sync` against them (issue 11).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest

from tsq.testing.certs import TestPki, make_pki
from tsq.testing.daemon import PeerProcess, ServerProcess, SyncProcess, subprocess_env

# Both peers run on this machine's one clock: every honest sample is near zero offset, and a late
# FIN taken as T4 would show as seconds (issue 11 saw offset -2.5 s, delay 5.0 s).
MAX_LOOPBACK_OFFSET_NS = 20_000_000
MAX_LOOPBACK_DELAY_NS = 200_000_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _run(args: List[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env())


def _json_rows(text: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_legacy_client_without_fin_is_answered_by_tsq_server(pki: TestPki) -> None:
    with ServerProcess(pki, extra=["--legacy-alpn"]) as server:
        started = time.monotonic()
        out = _run(["tsq.testing.peers", "legacy-client", server.address, "--ca", pki.ca_cert,
                    "--count", "3", "--timeout", "5"])
        took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    rows = _json_rows(out.stdout)
    assert len(rows) == 3
    for row in rows:
        assert abs(row["offset_ns"]) < MAX_LOOPBACK_OFFSET_NS and 0 < row["delay_ns"] < MAX_LOOPBACK_DELAY_NS
    assert took < 15  # answered at once, not after some FIN that never comes


def test_tsq_server_refuses_tsq1_unless_opted_in(pki: TestPki) -> None:
    with ServerProcess(pki) as server:
        out = _run(["tsq.testing.peers", "legacy-client", server.address, "--ca", pki.ca_cert,
                    "--count", "1", "--timeout", "3"])
    assert out.returncode == 1


def test_tsq_query_against_a_server_that_holds_fin(pki: TestPki) -> None:
    with PeerProcess(pki, "legacy-server", hold_fin_s=4.0) as peer:
        started = time.monotonic()
        out = _run(["tsq", "query", peer.address, "--ca", pki.ca_cert, "--allow-legacy-alpn",
                    "--count", "3", "--timeout", "8", "--json"])
        took = time.monotonic() - started
        refused = _run(["tsq", "query", peer.address, "--ca", pki.ca_cert, "--count", "1"])
    assert out.returncode == 0, out.stderr
    rows = _json_rows(out.stdout)
    samples = [r for r in rows if not r.get("summary")]
    summary = next(r for r in rows if r.get("summary"))
    assert len(samples) == 3 and summary["alpn"] == "tsq/1"
    for row in samples:
        assert row["mode"] == "stream"
        assert abs(row["offset_ns"]) < MAX_LOOPBACK_OFFSET_NS and 0 < row["delay_ns"] < MAX_LOOPBACK_DELAY_NS
    assert took < 12  # the held FIN never delays an exchange
    assert refused.returncode == 1 and "tsq/1" in refused.stderr


def test_tsq_query_falls_back_to_streams_when_datagrams_go_unanswered(pki: TestPki) -> None:
    """Draft §6.5: a server that offers DATAGRAM frames but never answers them."""
    with PeerProcess(pki, "silent-datagram-server") as peer:
        out = _run(["tsq", "query", peer.address, "--ca", pki.ca_cert, "--count", "3", "--json",
                    "--timeout", "0.5"])
    assert out.returncode == 0, out.stderr
    samples = [r for r in _json_rows(out.stdout) if not r.get("summary")]
    assert samples and all(r["mode"] == "stream" for r in samples)
    assert "fell back to streams" in out.stderr


@pytest.mark.slow
def test_tsq_sync_synchronises_from_a_deployed_server(pki: TestPki, tmp_path: Any) -> None:
    with PeerProcess(pki, "legacy-server", hold_fin_s=3.0) as peer, \
            SyncProcess([peer.address], str(tmp_path), ca=pki.ca_cert,
                        extra=["--allow-legacy-alpn", "--maxpoll", "1"]) as sync:
        st = sync.wait_status(lambda s: s["state"] == "synchronised", timeout=40)
    src = st["sources"][0]
    assert src["mode"] == "stream"
    assert src["offset_ns"] is not None and abs(src["offset_ns"]) < MAX_LOOPBACK_OFFSET_NS
    assert st["error_bound_ns"] is not None
