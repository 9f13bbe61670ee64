"""`tsq report` on logs written by the real writer (FieldLog), with rows built as the producers build
them (tsq.fieldlog.SampleRow / ModelRow / DeviceRow), and truth logs in the firmware host build's
format (tsq.fieldlog_files.truth_line)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsq.cli import main
from tsq.fieldlog import (
    DEVICE_FIELDS,
    DEVICES,
    GATEWAY_MODEL,
    GATEWAY_SAMPLES,
    DeviceRow,
    FieldLog,
    ModelRow,
    SampleRow,
)
from tsq.fieldlog_files import truth_line
from tsq.report import analyse, parse_duration_ns, render_table, violations

T0 = 1_795_000_000 * 10**9  # 2026-11-18T11:06:40Z
RAW0 = 5_000 * 10**9        # CLOCK_MONOTONIC_RAW at T0 (the gateway booted 5000 s earlier)
S = 10**9
DEV_A, DEV_B = 0xD0000001, 0xD0000002
Cap = pytest.CaptureFixture[str]


# -- what the producers write ---------------------------------------------------------------------
def put(log: FieldLog, row: Mapping[str, object], now_unix_ns: int) -> None:
    """Write one row as a producer at its real pace would: these helpers write ten minutes of rows
    in a tight loop, faster than the writer thread drains its 4096-row queue on a loaded machine,
    so a full queue waits for the writer instead of dropping the row (a CI run lost 8 % of them)."""
    for _ in range(100):
        if log.write(row, now_unix_ns=now_unix_ns):
            return
        log.flush(fsync=False)
    raise AssertionError("the field log kept refusing rows")


def sync_run(d: Path, *, seconds: float = 600, host: str = "gw-a", maxpoll: int = 6,
             skip: Iterable[int] = (), seed: int = 1, freq_drift_ppm_per_day: float = 0.0,
             model_every_s: Optional[float] = None) -> None:
    """What `tsq sync --log d` writes for one server: a burst at 2 s, then the poll interval doubling
    from 16 s up to 2^maxpoll; one gateway-samples row per accepted exchange and one gateway-model
    row per selection round. Rows whose index is in `skip` are lost exchanges (no row)."""
    rng = np.random.default_rng(seed)
    polls = [2.0] * 6 + [float(2**k) for k in range(4, maxpoll)]
    skipped = set(skip)
    with FieldLog(d, GATEWAY_SAMPLES, host_id=host) as samples, \
            FieldLog(d, GATEWAY_MODEL, host_id=host) as model:
        t, i = 0.0, 0
        while t <= seconds:
            poll = polls[i] if i < len(polls) else float(2**maxpoll)
            if model_every_s is not None:
                poll = model_every_s
            raw = RAW0 + int(t * S)
            synced = i > 0
            utc = T0 + int(t * S) + int(rng.normal(0, 2000)) if synced else None  # no model UTC before sync
            bound = int(20_000 + rng.uniform(0, 10_000)) if synced else None
            freq = 1.234 + freq_drift_ppm_per_day * t / 86_400 + rng.normal(0, 0.002)
            if i not in skipped:
                sample: SampleRow = {
                    "time_utc": utc, "raw_ns": raw, "server": "127.0.0.1:4433", "mode": "datagram",
                    "offset_ns": int(rng.normal(0, 1500)), "delay_ns": int(rng.uniform(55_000, 70_000)),
                    "error_bound_ns": bound, "freq_ppm": freq, "selection": "selected", "poll_s": poll}
                put(samples, sample, T0 + int(t * S))
                row: ModelRow = {
                    "time_utc": utc, "raw_ns": raw, "state": "synchronised" if synced else "unsynchronised",
                    "offset_ns": int(rng.normal(0, 800)), "freq_ppm": freq if synced else None,
                    "freq_error_ppm": 0.01 if synced else None, "error_bound_ns": bound, "sources": "1/1",
                    "leap": 0, "poll_s": poll, "reason": None if synced else "first samples"}
                put(model, row, T0 + int(t * S))
            t += poll
            i += 1


def bridge_run(d: Path, *, seconds: float = 600, host: str = "gw-a", devices: Sequence[int] = (DEV_A, DEV_B),
               ping_s: float = 0.25, truth: bool = True, seed: int = 2, true_error_ns: float = 3000,
               holdover_bound_ns: Optional[int] = None, silent: Optional[tuple[float, float]] = None) -> None:
    """What the bridge writes: per device one `devices` row per accepted ping: the first ones while
    the line fit starts ('tracking': no bound given, residuals of milliseconds), then 'synchronised'
    with the bound sent in the TIMESCALE; and, like the firmware host build, a truth log a second.
    `holdover_bound_ns`: the second half in holdover with that bound. `silent`: (from, to) seconds
    without rows (the device unplugged)."""
    rng = np.random.default_rng(seed)
    with contextlib.ExitStack() as files, FieldLog(d, DEVICES, host_id=host) as log:
        truths = {dev: files.enter_context(open(d / f"truth-{dev:08x}.log", "w"))
                  for dev in devices} if truth else {}
        n = int(seconds / ping_s)
        for k in range(n):
            t = k * ping_s
            if silent and silent[0] <= t < silent[1]:
                continue
            for dev in devices:
                tracking = k < 8
                holdover = holdover_bound_ns is not None and t > seconds / 2
                state = "tracking" if tracking else "holdover" if holdover else "synchronised"
                given = int(15_000 + rng.uniform(0, 8000))
                bound = None if tracking else holdover_bound_ns if holdover else given
                row: DeviceRow = {
                    "time_utc": T0 + int(t * S), "raw_ns": RAW0 + int(t * S), "device": f"0x{dev:08x}",
                    "state": state, "bound_ns": bound,
                    "residual_ns": int(rng.normal(0, 3e6)) if tracking else int(rng.normal(0, 25_000)),
                    "line_delay_ns": int(rng.uniform(30_000, 60_000)), "poll_s": ping_s}
                put(log, row, T0 + int(t * S))
                if dev in truths and abs(t - round(t)) < 1e-9:
                    rt = T0 + int(t * S)
                    if tracking:
                        truths[dev].write(truth_line(rt, None, None, 0))
                    else:
                        err = int(rng.normal(0, true_error_ns))
                        own = (bound or 0) + 1000  # the device's bound: given + its growth
                        truths[dev].write(truth_line(rt, rt + err, own, 2 if holdover else 1))


def report(*args: str, capsys: Cap) -> tuple[int, str, str]:
    rc = main(["report", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def as_json(*args: str, capsys: Cap) -> Dict[str, Any]:
    rc, out, err = report(*args, "--json", capsys=capsys)
    assert rc in (0, 1), err
    data: Dict[str, Any] = json.loads(out)
    return data


def one_gateway(rep: Dict[str, Any]) -> Dict[str, Any]:
    (g,) = rep["gateways"]
    return g


def device(g: Dict[str, Any], dev: int) -> Dict[str, Any]:
    (d,) = [x for x in g["devices"] if x["name"] == f"0x{dev:08x}"]
    return d


# -- healthy runs pass ----------------------------------------------------------------------------
def test_a_healthy_ten_minute_sync_at_maxpoll_6_and_bridge_pass(tmp_path: Path,
                                                               capsys: Cap) -> None:
    sync_run(tmp_path)
    bridge_run(tmp_path)
    rc, out, err = report(str(tmp_path), "--max-offset", "1ms", "--max-gap", "60s", capsys=capsys)
    assert rc == 0, err + out
    assert "gateway gw-a" in out and "line noise" in out and "bound given (the provable figure)" in out
    rep = as_json(str(tmp_path), capsys=capsys)
    g = one_gateway(rep)
    (src,) = g["sources"]
    assert (src["poll_min_s"], src["poll_max_s"]) == (2, 64)
    assert src["coverage"] == 1.0 and src["gap_count"] == 0
    m = g["model"]
    assert m["coverage"] == 1.0 and m["gap_count"] == 0
    assert m["states"]["first_state"] == "unsynchronised" and m["states"]["transition_count"] == 1
    assert m["known"]["what"] == "error bound" and m["known"]["max_ns"] < 30_001
    assert "drift_ppm_per_day" not in m["frequency"] and "24 h" in m["frequency"]["note"]
    for dev in (DEV_A, DEV_B):
        d = device(g, dev)
        assert d["timescale"] == "model UTC"
        assert d["tracking_rows"] == 8 and d["states"]["seconds"]["tracking"] == pytest.approx(2.0)
        assert d["bound_given"]["max_ns"] < 23_001  # the provable figure: what the device was sent
        assert d["line_noise"]["abs_max_ns"] < 200_000  # tracking rows (ms residuals) are not line noise
        assert d["truth"]["beyond_bound"] == 0 and d["truth"]["error"]["abs_max_ns"] < 20_000
        assert d["known"]["what"] == "true error"
        assert d["coverage"] == 1.0 and d["gap_count"] == 0 and d["poll_s"] == 0.25


def test_residuals_and_tracking_rows_never_count_as_offsets(tmp_path: Path,
                                                          capsys: Cap) -> None:
    """The issue's case: milliseconds of residual while the fit starts, no truth: --max-offset 1ms
    judges the bound the device was given, not the residuals."""
    bridge_run(tmp_path, seconds=40, truth=False, devices=(DEV_A,))
    rep = as_json(str(tmp_path), capsys=capsys)
    d = device(one_gateway(rep), DEV_A)
    assert d["truth"] is None and d["known"]["what"] == "error bound"
    assert violations(rep, parse_duration_ns("1ms"), None) == []
    assert d["line_noise"]["n"] == d["rows"] - 8
    rc, out, _ = report(str(tmp_path), "--max-offset", "1ms", capsys=capsys)
    assert rc == 0 and "tracking 2 s" in out


def test_max_offset_judges_true_error_where_a_truth_log_exists(tmp_path: Path,
                                                             capsys: Cap) -> None:
    bridge_run(tmp_path, seconds=60, devices=(DEV_A,), true_error_ns=2e6)  # 2 ms of true error
    rc, _, err = report(str(tmp_path), "--max-offset", "1ms", capsys=capsys)
    assert rc == 1 and "0xd0000001: true error reached" in err
    d = device(one_gateway(as_json(str(tmp_path), capsys=capsys)), DEV_A)
    assert d["truth"]["beyond_bound"] > 0  # 2 ms against a bound of tens of µs: the bound lied


def test_max_offset_judges_the_bound_without_truth(tmp_path: Path, capsys: Cap) -> None:
    bridge_run(tmp_path, seconds=60, devices=(DEV_A,), truth=False, holdover_bound_ns=3_000_000)
    rc, _, err = report(str(tmp_path), "--max-offset", "1ms", capsys=capsys)
    assert rc == 1 and "error bound reached 3.000 ms" in err
    d = device(one_gateway(as_json(str(tmp_path), capsys=capsys)), DEV_A)
    assert d["states"]["seconds"]["holdover"] == pytest.approx(30, abs=0.5)


def test_truth_logs_named_with_truth_and_bad_names(tmp_path: Path, capsys: Cap) -> None:
    logs, elsewhere = tmp_path / "logs", tmp_path / "truth"
    logs.mkdir()
    bridge_run(logs, seconds=30, devices=(DEV_A,))
    elsewhere.mkdir()
    shutil.move(str(logs / f"truth-{DEV_A:08x}.log"), elsewhere)
    d = device(one_gateway(as_json(str(logs), capsys=capsys)), DEV_A)
    assert d["truth"] is None
    for arg in (elsewhere, elsewhere / f"truth-{DEV_A:08x}.log"):
        d = device(one_gateway(as_json(str(logs), "--truth", str(arg), capsys=capsys)), DEV_A)
        assert d["truth"] is not None and d["truth"]["serving_lines"] > 20
    (tmp_path / "mytruth.txt").write_text("1 2 3 4 1\n")
    rc, _, err = report(str(logs), "--truth", str(tmp_path / "mytruth.txt"), capsys=capsys)
    assert rc == 2 and "truth-<device id>.log" in err and len(err.splitlines()) == 1


# -- gaps against the poll interval in force ----------------------------------------------------------
def test_a_missed_poll_is_a_gap_normal_polling_is_not(tmp_path: Path, capsys: Cap) -> None:
    sync_run(tmp_path, skip=[12])  # one lost exchange at the 64 s poll: 128 s without a row
    rep = as_json(str(tmp_path), capsys=capsys)
    src = one_gateway(rep)["sources"][0]
    assert src["gap_count"] == 1 and src["longest_gap_s"] == pytest.approx(128, abs=1)
    assert src["gaps"][0]["poll_s"] == 64
    assert src["coverage"] == pytest.approx(1 - 64 / src["span_s"], abs=1e-3)
    rc, _, err = report(str(tmp_path), "--max-gap", "60s", capsys=capsys)
    assert rc == 1 and "a gap of 128 s > 60 s" in err
    rc, _, _ = report(str(tmp_path), "--max-gap", "200s", capsys=capsys)
    assert rc == 0


def test_a_silent_device_shows_a_gap_and_no_rows_in_its_states(tmp_path: Path,
                                                              capsys: Cap) -> None:
    bridge_run(tmp_path, seconds=60, devices=(DEV_A,), truth=False, silent=(20.0, 30.0))
    d = device(one_gateway(as_json(str(tmp_path), capsys=capsys)), DEV_A)
    assert d["gap_count"] == 1 and d["longest_gap_s"] == pytest.approx(10.25)
    assert d["states"]["no_rows_s"] == pytest.approx(10.0)
    assert d["coverage"] == pytest.approx(1 - 10.0 / d["span_s"], abs=1e-3)


# -- drift ----------------------------------------------------------------------------------------
def test_drift_with_its_standard_error_only_above_a_day(tmp_path: Path, capsys: Cap) -> None:
    sync_run(tmp_path, seconds=30 * 3600, freq_drift_ppm_per_day=0.05, model_every_s=64.0)
    f = one_gateway(as_json(str(tmp_path), capsys=capsys))["model"]["frequency"]
    assert f["span_s"] > 86_400 and 0 < f["drift_se_ppm_per_day"] < 0.01
    assert abs(f["drift_ppm_per_day"] - 0.05) < 4 * f["drift_se_ppm_per_day"]
    rc, out, _ = report(str(tmp_path), capsys=capsys)
    assert rc == 0
    assert "ppm/day (1 s.e.)" in out
    # a span under a day: no drift figure, and the reason
    _, out, _ = report(str(tmp_path), "--until", str((T0 + 3600 * S) / 1e9), capsys=capsys)
    assert "drift not shown: drift needs at least 24 h of model rows (have 0.98 h)" in out


# -- several gateways, device ids ---------------------------------------------------------------------
def test_several_gateways_are_reported_separately(tmp_path: Path, capsys: Cap) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    sync_run(a, seconds=300, host="gw-a")
    sync_run(b, seconds=300, host="gw-b", seed=5)
    bridge_run(b, seconds=20, host="gw-b", devices=(DEV_B,))
    rep = as_json(str(a), str(b), capsys=capsys)
    hosts = {g["host"]: g for g in rep["gateways"]}
    assert set(hosts) == {"gw-a", "gw-b"}
    assert hosts["gw-a"]["devices"] == [] and [d["name"] for d in hosts["gw-b"]["devices"]] == ["0xd0000002"]
    assert hosts["gw-a"]["model"]["rows"] == hosts["gw-b"]["model"]["rows"]  # not merged into one series
    assert hosts["gw-b"]["devices"][0]["truth"] is not None  # its truth log, from its directory


def test_v1_logs_of_two_gateways_stay_apart_by_directory(tmp_path: Path, capsys: Cap) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "devices-20261118.csv").write_text(
            "# tsq-fieldlog v1 stream=devices\ntime_utc,device,residual_ns,line_delay_ns,bound_ns,state\n"
            + "".join(f"2026-11-18T11:06:{i:02d}.000000000Z,0x00c0ffee,{i},90000,5000,synchronised\n"
                      for i in range(30)))
    rep = as_json(str(tmp_path / "a"), str(tmp_path / "b"), capsys=capsys)
    assert [g["host_id_logged"] for g in rep["gateways"]] == [False, False]
    assert len(rep["gateways"]) == 2
    d = rep["gateways"][0]["devices"][0]
    assert d["rows"] == 30 and d["timescale"] == "system clock (v1 rows)"
    assert d["gap_rule"].startswith("poll interval not logged (v1)")


@pytest.mark.parametrize("spelling", ["d0000001", "D0000001", "0xd0000001", "0XD0000001", "0x00D0000001"])
def test_device_ids_match_in_any_case_with_or_without_0x(tmp_path: Path, capsys: Cap,
                                                         spelling: str) -> None:
    bridge_run(tmp_path, seconds=10, truth=False)
    rep = as_json(str(tmp_path), "--device", spelling, capsys=capsys)
    assert [d["name"] for d in one_gateway(rep)["devices"]] == ["0xd0000001"]


def test_an_unknown_device_says_which_there_are(tmp_path: Path, capsys: Cap) -> None:
    bridge_run(tmp_path, seconds=10, truth=False)
    rc, _, err = report(str(tmp_path), "--device", "c0ffee01", capsys=capsys)
    assert rc == 2
    assert err.strip() == ("tsq report: no rows for device c0ffee01 "
                           "(devices in these logs: 0xd0000001, 0xd0000002)")


# -- read errors: one line, exit 2, never a traceback -------------------------------------------------
def _cli(*args: str, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "tsq", "report", *args], capture_output=True,
                          text=True, timeout=120)


def _one_line_error(p: subprocess.CompletedProcess[str], text: str) -> None:
    assert p.returncode == 2, p
    assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    assert text in p.stderr, p.stderr


def test_bad_files_and_wrong_versions_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "devices-20261118.csv").write_text("time,value\n1,2\n")
    _one_line_error(_cli(str(tmp_path)), "devices-20261118.csv: not a tsq field log")
    (tmp_path / "devices-20261118.csv").write_text("# tsq-fieldlog v3 stream=devices host=x\na\n1\n")
    _one_line_error(_cli(str(tmp_path)), "format version 3 is not supported")
    _one_line_error(_cli(str(tmp_path / "nothing-here")), "no such file or directory")
    (tmp_path / "devices-20261118.csv").unlink()
    _one_line_error(_cli(str(tmp_path)), "no field-log rows found")


def test_an_unreadable_directory_is_a_one_line_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    bridge_run(locked, seconds=5, truth=False)
    locked.chmod(0)
    try:
        prefix: List[str] = []
        if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv(1) to drop CAP_DAC_OVERRIDE")
            prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
        _one_line_error(_cli(str(locked), prefix=prefix), "cannot list the directory: Permission denied")
    finally:
        locked.chmod(0o755)


def test_without_numpy_report_names_the_extra(tmp_path: Path) -> None:
    bridge_run(tmp_path, seconds=5, truth=False)
    code = textwrap.dedent(
        """
        import sys
        sys.modules["numpy"] = None
        from tsq.cli import main
        sys.exit(main(["report", sys.argv[1]]))
        """
    )
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    _one_line_error(p, "install the report extra: pip install 'tsq-gateway[report]'")


# -- damage, plots ------------------------------------------------------------------------------------
def test_torn_line_json_thresholds_and_plots(tmp_path: Path) -> None:
    sync_run(tmp_path, seconds=300)
    bridge_run(tmp_path, seconds=60)
    day = sorted(tmp_path.glob("devices-*.csv"))[0]
    with open(day, "ab") as f:
        f.write(b"2026-11-18T11:10:00.0Z,0xd0000001,12")  # torn by a power cut
    ok = _cli(str(tmp_path), "--json", "--max-offset", "1ms")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["torn_lines"] == 1
    bad = _cli(str(tmp_path), "--max-offset", "100ns")
    assert bad.returncode == 1 and "THRESHOLD VIOLATED" in bad.stderr
    png = tmp_path / "r.png"
    p = _cli(str(tmp_path), "--png", str(png))
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = tmp_path / "html"
    assert _cli(str(tmp_path), "--html", str(html)).returncode == 0
    assert "TSQ field report" in (html / "index.html").read_text()


def test_bad_duration_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="duration"):
        parse_duration_ns("ten")


def test_a_bad_cell_costs_its_row_only(tmp_path: Path) -> None:
    """One unparsable number among many rows: that row is counted as malformed, the rest are kept."""
    bridge_run(tmp_path, seconds=75, devices=(DEV_A,), truth=False)
    path = next(tmp_path.glob("devices-*.csv"))
    lines = path.read_text().splitlines(keepends=True)
    cells = lines[10].split(",")
    cells[2] = "12x4"
    lines[10] = ",".join(cells)
    lines[20] = lines[20].replace(lines[20].split(",")[0], "not-a-time")
    path.write_text("".join(lines))
    rep = analyse([str(tmp_path)])
    d = device(one_gateway(rep), DEV_A)
    assert d["rows"] == 300 - 2
    assert rep["bad_lines"] == 2


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=200))
def test_report_is_total_on_arbitrary_log_and_truth_content(tail: bytes, truth_bytes: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        header = b"# tsq-fieldlog v2 stream=devices host=gw\n" + ",".join(DEVICE_FIELDS).encode() + b"\n"
        (Path(d) / "devices-20261118.csv").write_bytes(header + tail)
        (Path(d) / "gateway-model-20261118.csv").write_bytes(tail)
        (Path(d) / "truth-d0000001.log").write_bytes(truth_bytes)
        rep = analyse([d])
        assert isinstance(rep["gateways"], list)
        render_table({k: v for k, v in rep.items() if k != "_plots"})
