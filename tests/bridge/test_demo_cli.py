"""`tsq demo` and `tsq bridge` as a user runs them: real subprocesses, exit statuses, output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_bridge_without_source_names_both_options() -> None:
    p = subprocess.run([sys.executable, "-m", "tsq.bridge", "/dev/null"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert "--server" in p.stderr and "--source system" in p.stderr


@pytest.mark.slow
def test_demo_runs_for_its_duration_and_exits_cleanly() -> None:
    p = subprocess.run([sys.executable, "-m", "tsq", "demo", "--duration", "15"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.split()[:1] == ["gateway"]]
    assert len(rows) >= 10
    # Once running, the gateway row shows a state and a bound.
    assert any("synchronised" in r for r in rows[-3:]), p.stdout[-2000:]


@pytest.mark.slow
def test_a_logged_demo_leaves_truth_logs_the_report_reads(tmp_path: Path) -> None:
    log = tmp_path / "log"
    p = subprocess.run([sys.executable, "-m", "tsq", "demo", "--duration", "20", "--log", str(log)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in log.iterdir())
    assert {"truth-gateway.log", "truth-d0000001.log", "truth-d0000002.log"} <= set(names), names
    r = subprocess.run([sys.executable, "-m", "tsq", "report", str(log), "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    # the gateway's and each device's true error come from their truth logs
    assert text.count("truth-gateway.log") >= 1 and text.count("truth-d000000") >= 2, text[-3000:]
