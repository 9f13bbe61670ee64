"""`tsq demo` and `tsq bridge` as a user runs them: real subprocesses, exit statuses, output."""

from __future__ import annotations

import subprocess
import sys

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
