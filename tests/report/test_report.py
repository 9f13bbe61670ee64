"""`tsq report` and tsq.stability against known series and against allantools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import allantools
import numpy as np
import pytest

from tsq.fieldlog import DEVICE_FIELDS, GATEWAY_MODEL_FIELDS, FieldLog
from tsq.report import analyse, parse_duration_ns, violations
from tsq.stability import regular_phase, segments, stability

T0 = 1_795_000_000 * 10**9


def test_regular_series_matches_allantools_exactly() -> None:
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(0, 1e-9, 4096))  # random-walk phase
    t = np.arange(len(x), dtype=np.float64)
    st = stability(t, x)
    _, ref_ad, _, _ = allantools.oadev(x, rate=1.0, data_type="phase", taus=st.taus_s)
    _, ref_td, _, _ = allantools.tdev(x, rate=1.0, data_type="phase", taus=st.taus_s)
    assert st.segments == 1 and len(st.taus_s) >= 8
    np.testing.assert_allclose(st.adev, ref_ad, rtol=1e-9)
    np.testing.assert_allclose(st.tdev_s, ref_td, rtol=1e-9)


def test_white_phase_noise_adev_slope_is_minus_one() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1e-6, 8192)
    st = stability(np.arange(len(x), dtype=np.float64), x)
    slope = np.polyfit(np.log(st.taus_s[:8]), np.log(st.adev[:8]), 1)[0]
    assert -1.15 < slope < -0.85, slope
    # TDEV of white phase noise falls as tau^-1/2
    tslope = np.polyfit(np.log(st.taus_s[:8]), np.log(st.tdev_s[:8]), 1)[0]
    assert -0.65 < tslope < -0.35, tslope


def test_random_walk_frequency_noise_adev_rises() -> None:
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(0, 1e-10, 8192))  # random-walk frequency
    x = np.cumsum(y)
    st = stability(np.arange(len(x), dtype=np.float64), x)
    slope = np.polyfit(np.log(st.taus_s[2:9]), np.log(st.adev[2:9]), 1)[0]
    assert 0.3 < slope < 0.7, slope  # tau^+1/2


def test_step_shows_in_mtie() -> None:
    x = np.zeros(1000)
    x[500:] = 5e-6
    st = stability(np.arange(1000, dtype=np.float64), x)
    assert all(abs(m - 5e-6) < 1e-12 for m in st.mtie_s)


def test_gap_splits_segments_and_is_not_bridged() -> None:
    t = np.concatenate([np.arange(0, 500), np.arange(5000, 5500)]).astype(np.float64)
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1e-9, len(t))
    x[500:] += 1e-3  # a 1 ms jump across the gap must not show as a step inside a segment
    tau0, segs = segments(t)
    assert tau0 == 1.0 and segs == [(0, 500), (500, 1000)]
    st = stability(t, x)
    assert st.segments == 2 and max(st.mtie_s) < 1e-7
    # uneven spacing inside a segment: interpolated onto the tau0 grid
    ph = regular_phase(np.array([0.0, 1.0, 3.0]), np.array([0.0, 1.0, 3.0]), 1.0)
    np.testing.assert_allclose(ph, [0, 1, 2, 3])


def _write_logs(d: Path, offsets_ns: list[int], gap_at: int | None = None) -> None:
    with FieldLog(d, "devices", DEVICE_FIELDS) as dev, \
            FieldLog(d, "gateway-model", GATEWAY_MODEL_FIELDS) as m:
        t = T0
        for i, off in enumerate(offsets_ns):
            t += 10**9 if i != gap_at else 600 * 10**9
            dev.write({"device": "0x1", "residual_ns": off, "line_delay_ns": 90_000, "bound_ns": 5000,
                       "state": "synchronised"}, now_unix_ns=t)
            m.write({"state": "holdover" if 100 <= i < 150 else "synchronised", "offset_ns": off // 10,
                     "freq_ppm": 1.0 + (t - T0) / 1e9 * 1e-4, "error_bound_ns": 3000, "sources": "1/1",
                     "leap": 0},
                    now_unix_ns=t)


def test_report_statistics_of_a_known_series(tmp_path: Path) -> None:
    offs = [(-1) ** i * 1000 for i in range(300)]  # ±1 µs square wave
    offs[200] = 9000  # one excursion beyond the bound
    _write_logs(tmp_path, offs, gap_at=250)
    rep = analyse([str(tmp_path)])
    (dev,) = [s for s in rep["series"] if s["kind"] == "device"]
    assert dev["samples"] == 300
    assert dev["abs_offset_max_ns"] == 9000 and dev["abs_offset_p50_ns"] == 1000
    assert dev["offset_beyond_bound"] == 1
    assert len(dev["gaps"]) == 1 and 599 < dev["longest_gap_s"] < 601
    m = rep["model"]
    assert abs(m["time_holdover_s"] - 50) < 1e-6
    assert abs(m["freq_drift_ppm_per_day"] - 1e-4 * 86400) < 1e-3  # +1e-4 ppm per second
    assert violations(rep, parse_duration_ns("5us"), None) != []
    assert violations(rep, parse_duration_ns("10us"), parse_duration_ns("700s")) == []


def test_cli_json_thresholds_plots_and_torn_line(tmp_path: Path) -> None:
    _write_logs(tmp_path, [500] * 120)
    day = sorted(tmp_path.glob("devices-*.csv"))[0]
    with open(day, "ab") as f:
        f.write(b"2026-11-18T11:10:00.0Z,0x1,12")  # torn by a power cut
    cmd = [sys.executable, "-m", "tsq", "report", str(tmp_path)]
    ok = subprocess.run([*cmd, "--json", "--max-offset", "1ms"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["torn_lines"] == 1
    bad = subprocess.run([*cmd, "--max-offset", "100ns"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "THRESHOLD VIOLATED" in bad.stderr
    png = tmp_path / "r.png"
    subprocess.run([*cmd, "--png", str(png)], check=True, capture_output=True, timeout=120)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = tmp_path / "html"
    subprocess.run([*cmd, "--html", str(html)], check=True, capture_output=True, timeout=120)
    assert "TSQ field report" in (html / "index.html").read_text()


def test_bad_duration_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="duration"):
        parse_duration_ns("ten")


def test_a_bad_cell_costs_its_row_only(tmp_path: Path) -> None:
    """One unparsable number among many rows: that row is counted as malformed, the rest are kept."""
    _write_logs(tmp_path, [1000] * 300)
    path = next(tmp_path.glob("devices-*.csv"))
    lines = path.read_text().splitlines(keepends=True)
    lines[10] = lines[10].replace(",1000,", ",12x4,")
    lines[20] = lines[20].replace(lines[20].split(",")[0], "not-a-time")
    path.write_text("".join(lines))
    rep = analyse([str(tmp_path)])
    (dev,) = [s for s in rep["series"] if s["kind"] == "device"]
    assert dev["samples"] == 298
    assert rep["bad_lines"] == 2
