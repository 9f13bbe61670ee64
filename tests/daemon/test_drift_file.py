"""The drift file across a real restart of `tsq sync` (issue 13): written atomically at exit, read
at start and used, a damaged file ignored with a reason, an unwritable one only a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsq.gateway.driftfile import load_drift, save_drift
from tsq.sync.drift import DriftRecord
from tsq.testing.certs import TestPki, make_pki
from tsq.testing.daemon import ServerProcess, SyncProcess


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def test_load_reports_missing_damaged_and_good(tmp_path: Path) -> None:
    path = str(tmp_path / "drift.json")
    assert load_drift(path) == (None, f"drift file {path}: none yet (cold start)")
    Path(path).write_text("{not json")
    record, note = load_drift(path)
    assert record is None and "ignored" in note
    good = DriftRecord(12_345.0, 3.0, 1_795_000_000 * 10**9, 42)
    save_drift(path, good)
    assert load_drift(path)[0] == good
    assert [p.name for p in tmp_path.iterdir()] == ["drift.json"]   # no temporary file left


@pytest.mark.slow
def test_sync_writes_the_drift_file_at_exit_and_uses_it_at_start(pki: TestPki, tmp_path: Path) -> None:
    drift = str(tmp_path / "drift.json")
    with ServerProcess(pki) as server:
        with SyncProcess([server.address], str(tmp_path / "a"), ca=pki.ca_cert,
                         extra=["--drift-file", drift, "--maxpoll", "0"]) as sync:
            sync.wait_status(lambda s: s["state"] == "synchronised", timeout=30)
        saved = json.loads(Path(drift).read_text())
        assert saved["format"] == "tsq-drift-1" and abs(saved["freq_ppb"]) < 1e6
        with SyncProcess([server.address], str(tmp_path / "b"), ca=pki.ca_cert,
                         extra=["--drift-file", drift, "--maxpoll", "0"]) as again:
            again.wait_status(lambda s: s["state"] == "synchronised", timeout=30)
            out = again.output
        assert f"drift file {drift}: " in out and "cold start" not in out


@pytest.mark.slow
def test_an_unwritable_drift_file_is_only_a_warning(pki: TestPki, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    drift = str(tmp_path / "a-file" / "drift.json")       # ENOTDIR, for root too
    with ServerProcess(pki) as server:
        sync = SyncProcess([server.address], str(tmp_path / "s"), ca=pki.ca_cert,
                           extra=["--drift-file", drift, "--maxpoll", "0"])
        try:
            sync.wait_status(lambda s: s["state"] == "synchronised", timeout=30)
        finally:
            rc = sync.stop()
    assert rc == 0
    assert f"drift file {drift}: not written" in sync.output
