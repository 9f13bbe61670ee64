"""Smoke test of benchmarks/field.py: one short outage through a real server, relay and `tsq sync`
(about 25 s). It checks the benchmark's machinery (readings through the control socket, the relay's
outage switch and byte counters, the figures), not the engine's accuracy."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from typing import List

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "benchmarks", "field.py")
_spec = importlib.util.spec_from_file_location("tsq_bench_field", _PATH)
assert _spec is not None and _spec.loader is not None
field = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = field      # dataclasses look their module up here
_spec.loader.exec_module(field)

pytestmark = pytest.mark.slow


def test_outage_through_the_relay_is_seen_and_counted() -> None:
    sc = field.Scenario("outage", 1, 24.0, 0, 0, actions=((10.0, "drop"), (17.0, "undrop")))
    with tempfile.TemporaryDirectory() as tmp:
        rig = field.TsqRig(sc, tmp, seed=1)
        errors: List[BaseException] = []
        field.run_rig(rig, errors)
        assert not errors, errors
        assert set(rig.events) >= {"start", "drop", "undrop", "end"}
        assert any(r.state == "synchronised" and r.err_ns is not None for r in rig.readings)
        totals = rig.relay_totals()
        assert totals["bytes_in"] > 0 and totals["bytes_out"] > 0
        assert totals["dropped"] > 0          # the outage switch dropped the polls of 7 s
        per_day = rig.bytes_per_day("start", "end")
        assert per_day is not None and per_day > 0
        f = field.figures(rig)
        assert "truthful" in f.row and "back to sync" in f.row and "inside bound" in f.row
        # every process is gone once run_rig returns
        for proc in [*rig.relays, *rig.servers, *rig.runs]:
            assert proc.proc.poll() is not None
