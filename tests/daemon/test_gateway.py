"""`tsq gateway` (issue 15): one process for the engine, the serial devices and the outputs, one
config file, SIGHUP reload of the servers, and the system clock as the devices' time source."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tsq.testing.certs import TestPki, make_pki
from tsq.testing.daemon import ServerProcess, SyncProcess, subprocess_env
from tsq.testing.firmware import FirmwareError, SimulatedDevice, build_host_firmware


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _names(st: Dict[str, Any]) -> set[str]:
    return {s["name"] for s in st["sources"]}


@pytest.mark.slow
def test_sighup_reloads_the_servers_from_the_file(pki: TestPki, tmp_path: Path) -> None:
    with ServerProcess(pki) as a, ServerProcess(pki) as b:
        conf = tmp_path / "tsq.toml"
        conf.write_text(f'servers = ["{a.address}"]\nmaxpoll = 1\n[trust]\nca = "{pki.ca_cert}"\n')
        with SyncProcess([], str(tmp_path), command="gateway", extra=["--config", str(conf)]) as gw:
            gw.wait_status(lambda s: s["state"] == "synchronised" and _names(s) == {a.address}, 30)
            conf.write_text(f'servers = ["{b.address}"]\nmaxpoll = 1\nminpoll = 1\n'
                            f'[trust]\nca = "{pki.ca_cert}"\n')
            gw.signal(signal.SIGHUP)
            st = gw.wait_status(lambda s: _names(s) == {b.address} and s["sources"][0]["samples"] > 0, 30)
            assert st["configured"] == 1
            out = gw.output
            assert f"server {b.address} added" in out and f"server {a.address} removed" in out
            assert "needs a restart to change: minpoll" in out
            conf.write_text("servers = [\n")            # broken: the running configuration stays
            gw.signal(signal.SIGHUP)
            gw.wait_line(re.compile("reload refused"), 10)
            assert gw.status()["state"] == "synchronised"


@pytest.mark.slow
def test_one_process_serves_a_device_from_one_connection_per_server(pki: TestPki, tmp_path: Path) -> None:
    try:
        binary = build_host_firmware()
    except FirmwareError as exc:
        pytest.skip(str(exc))
    with tempfile.TemporaryDirectory() as d, ServerProcess(pki) as server, \
            SimulatedDevice(d, device_id=0xC0FFEE, drift_ppm=30, binary=binary) as dev, \
            SyncProcess([server.address], str(tmp_path), ca=pki.ca_cert, command="gateway",
                        extra=[dev.path, "--maxpoll", "1"]) as gw:
        st = gw.wait_status(lambda s: s.get("devices") and s["devices"][0]["state"] == "synchronised", 60)
        assert st["state"] == "synchronised" and st["sources"][0]["connections"] == 1
        assert st["devices"][0]["device"] == "0x00c0ffee"


@pytest.mark.slow
def test_devices_from_the_system_clock_without_servers(tmp_path: Path) -> None:
    try:
        binary = build_host_firmware()
    except FirmwareError as exc:
        pytest.skip(str(exc))
    with tempfile.TemporaryDirectory() as d, \
            SimulatedDevice(d, device_id=0xD0D0, drift_ppm=-20, binary=binary) as dev, \
            SyncProcess([], str(tmp_path), command="gateway",
                        extra=[dev.path, "--source", "system", "--assume-bound", "1000"]) as gw:
        st = gw.wait_status(lambda s: s.get("devices") and s["devices"][0]["state"] == "synchronised", 60)
        assert st["sources"] == [] and st["state"] == "synchronised"


@pytest.mark.parametrize("args, says", [
    ([], "nothing to do"),
    (["/dev/ttyX"], "needs --server"),
    (["--source", "system", "--server", "127.0.0.1:1", "/dev/ttyX"], "exclusive"),
])
def test_what_cannot_run_is_one_line_and_exit_2(tmp_path: Path, args: List[str], says: str) -> None:
    empty = tmp_path / "tsq.toml"
    empty.write_text("")                  # so /etc/tsq/tsq.toml on the test machine plays no part
    out = subprocess.run([sys.executable, "-m", "tsq", "gateway", "--config", str(empty), *args],
                         capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
