"""The control socket (real Unix sockets), `tsq status` rendering and CLI, the Prometheus output."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from typing import Any, Dict, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.bridge.status import DeviceStatus
from tsq.gateway.control import ControlError, ControlServer, query_status
from tsq.gateway.status_cli import render, summary_line
from tsq.outputs.metrics import MetricsHttpServer, render_metrics, write_metrics_file
from tsq.status import GatewayStatus
from tsq.sync.tracking import SourceStatus, TrackingStatus
from tsq.testing.daemon import subprocess_env

STATUS: Dict[str, Any] = {
    "version": 1, "state": "synchronised", "time_utc": "2026-11-24T19:00:00.123456789Z", "leap": 0,
    "system_offset_ns": -1234, "freq_ppm": 1.234, "freq_error_ppm": 0.01, "error_bound_ns": 2500,
    "last_update_utc": "2026-11-24T18:59:59.300000000Z", "last_update_age_s": 0.8, "poll_s": 16.0,
    "sources": [
        {"name": "127.0.0.1:4433", "mode": "datagram", "selection": "selected", "offset_ns": 12,
         "delay_ns": 40000, "jitter_ns": 300, "reach": 255, "samples": 12, "last_sample_age_s": 0.5,
         "stratum": 1},
        {"name": "127.0.0.1:4434", "mode": "stream", "selection": "falseticker", "offset_ns": 100_000_000,
         "delay_ns": 52000, "jitter_ns": 900, "reach": 7, "samples": 3, "last_sample_age_s": 3.0,
         "stratum": None},
    ],
    "devices": [{"device": "0x00c0ffee", "port": "/dev/ttyUSB0", "state": "synchronised", "firmware": "1.0.0",
                 "residual_ns": 1200, "line_delay_ns": 800000, "bound_ns": 9000, "last_seen_age_s": 0.9,
                 "bad_frames": 0}],
}


def _source(name: str, selection: str, offset: int, delay: int, jitter: int, reach: int, samples: int,
            age: float, stratum: Any) -> SourceStatus:
    return SourceStatus(name=name, mode=None, selection=selection, reachable=True, missed_polls=0,
                        offset_ns=offset, delay_ns=delay, jitter_ns=jitter, reach=reach, samples=samples,
                        last_sample_age_s=age, stratum=stratum, distance_ns=None, freq_ppm=None, poll_s=16.0,
                        last_reason="ok")


# The daemon's typed view of STATUS: what the status line and the metrics read.
TYPED = GatewayStatus(
    tracking=TrackingStatus(
        state="synchronised", reason="", utc_ns=None, leap=0, system_offset_ns=-1234, freq_ppm=1.234,
        freq_error_ppm=0.01, error_bound_ns=2500, last_update_utc_ns=None, last_update_age_s=0.8,
        poll_s=16.0, holdover_growth_ppb=None, configured=2, reachable=2, agreeing=1, quorum=1, minsources=1,
        sources=(_source("127.0.0.1:4433", "selected", 12, 40000, 300, 255, 12, 0.5, 1),
                 _source("127.0.0.1:4434", "falseticker", 100_000_000, 52000, 900, 7, 3, 3.0, None))),
    devices=(DeviceStatus(device="0x00c0ffee", port="/dev/ttyUSB0", state="synchronised", firmware="1.0.0",
                          residual_ns=1200, line_delay_ns=800000, bound_ns=9000, last_seen_age_s=0.9,
                          bad_frames=0),))


class LoopThread:
    """An asyncio loop in a thread, so blocking clients can be tested against the async server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


def test_control_roundtrip_and_cleanup(tmp_path: Any, loop_thread: LoopThread) -> None:
    path = str(tmp_path / "run" / "control.sock")   # directory does not exist yet: created
    calls = []

    def status() -> Dict[str, Any]:
        calls.append(1)
        return {**STATUS, "n": len(calls)}

    server = ControlServer(path, status)
    loop_thread.call(server.start())
    try:
        assert query_status(path)["n"] == 1
        got = query_status(path)
        assert got["n"] == 2 and got["sources"] == STATUS["sources"]
        # a second server on the same live path refuses instead of stealing it
        with pytest.raises(ControlError, match="already serving"):
            loop_thread.call(ControlServer(path, status).start())
        # an unknown command gets an error object, not a crash
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b"reboot\n")
            reply = json.loads(s.makefile("rb").read())
        assert "unknown command" in reply["error"]
    finally:
        loop_thread.call(server.close())
    assert not os.path.exists(path)
    with pytest.raises(ControlError, match="no tsq daemon is running"):
        query_status(path)


def test_stale_socket_replaced_and_provider_error_reported(tmp_path: Any, loop_thread: LoopThread) -> None:
    path = str(tmp_path / "control.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()    # the file stays, nobody listens: what a crashed daemon leaves behind
    with pytest.raises(ControlError, match="no tsq daemon"):
        query_status(path)

    def broken() -> Dict[str, Any]:
        raise RuntimeError("provider bug")

    server = ControlServer(path, broken)
    loop_thread.call(server.start())
    try:
        with pytest.raises(ControlError, match="provider bug"):
            query_status(path)
    finally:
        loop_thread.call(server.close())


def test_not_a_socket_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="not a socket"):
        asyncio.run(ControlServer(str(path), lambda: STATUS).start())
    assert path.read_text() == "precious"


def test_render_tracking_sources_devices() -> None:
    text = render(STATUS)
    lines = text.splitlines()
    assert "State           : synchronised" in lines
    assert any(line.startswith("System clock") and "-1.234us" in line and "slow" in line for line in lines)
    assert any(line.startswith("Frequency") and "+1.234 ppm" in line for line in lines)
    assert any(line.startswith("Error bound") and "2.500us" in line for line in lines)
    src = [line for line in lines if "127.0.0.1:443" in line]
    assert src[0].startswith("* ") and "+12ns" in src[0] and "40.000us" in src[0] and " 377 " in src[0]
    assert src[1].startswith("x ") and "+100.000ms" in src[1] and " 7 " in src[1]
    assert any("0x00c0ffee" in line and "/dev/ttyUSB0" in line for line in lines)
    assert summary_line(TYPED.tracking).endswith("sources [*x]")


def test_render_says_why_timescales_are_withheld() -> None:
    dev = {"device": "0x00c0ffee", "port": "/dev/ttyUSB0", "state": "unsynchronised", "source_ppm": 5012.3}
    text = render({"devices": [dev]})
    assert "timescales withheld" in text and "+5012 ppm" in text
    assert "withheld" not in render({"devices": [{**dev, "source_ppm": None}]})


def test_render_tolerates_nulls_and_junk() -> None:
    nulls = {k: None for k in STATUS}
    nulls["sources"] = [{"name": None}, "junk"]
    text = render(nulls)
    assert "State           : -" in text
    assert "?" in text.splitlines()[-2] or "? " in text
    render({})


def test_status_cli_json_and_not_running(tmp_path: Any, loop_thread: LoopThread) -> None:
    path = str(tmp_path / "c.sock")
    env = subprocess_env()
    cmd = [sys.executable, "-m", "tsq", "status", "--control", path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and "no tsq daemon is running" in r.stderr and path in r.stderr
    server = ControlServer(path, lambda: STATUS)
    loop_thread.call(server.start())
    try:
        r = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == STATUS
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0 and "127.0.0.1:4433" in r.stdout and "State" in r.stdout
    finally:
        loop_thread.call(server.close())


def test_metrics_text_file_and_http(tmp_path: Any, loop_thread: LoopThread) -> None:
    text = render_metrics(TYPED)
    assert 'tsq_state{state="synchronised"} 1.0' in text
    assert 'tsq_state{state="holdover"} 0.0' in text
    assert "tsq_system_offset_seconds -1.234e-06" in text
    assert 'tsq_source_selection{source="127.0.0.1:4434",selection="falseticker"} 1.0' in text
    assert "# TYPE tsq_source_offset_seconds gauge" in text
    assert text.count("# TYPE tsq_source_offset_seconds") == 1
    assert "stratum" not in text     # absent values are omitted, never rendered as junk
    path = str(tmp_path / "tsq.prom")
    write_metrics_file(path, text)
    with open(path) as fh:
        assert fh.read() == text
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tsq")] == []
    http = MetricsHttpServer(0, lambda: TYPED)
    loop_thread.call(http.start())
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http.port}/metrics", timeout=10) as resp:
            assert resp.read().decode() == text
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{http.port}/", timeout=10)
    finally:
        loop_thread.call(http.close())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
status_like = st.fixed_dictionaries({}, optional={
    k: json_values | st.just(v) for k, v in STATUS.items()})


@given(status_like)
def test_render_total(status: Dict[str, Any]) -> None:
    # whatever a (future or foreign) daemon sends, the views render it or show "-"
    assert isinstance(render(status), str)


typed_status = st.builds(
    GatewayStatus,
    tracking=st.builds(TrackingStatus, sources=st.lists(st.builds(SourceStatus), max_size=3).map(tuple)),
    devices=st.none() | st.lists(st.builds(DeviceStatus), max_size=3).map(tuple))


@given(typed_status)
def test_status_line_and_metrics_total(status: GatewayStatus) -> None:
    # any status the daemon can hold (nulls, NaN, odd names) gives a line and valid exposition text
    assert isinstance(summary_line(status.tracking), str)
    text = render_metrics(status)
    assert text.endswith("\n")
    assert all(line.startswith(("# ", "tsq_")) for line in text.split("\n")[:-1])   # \n is the only separator
