"""The systemd units in examples/systemd pass `systemd-analyze verify` (issue 15), with ExecStart
pointed at this interpreter so the check also proves the command lines parse."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tsq.gateway.settings import SyncConfig

UNITS = Path(__file__).resolve().parents[2] / "examples" / "systemd"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze not installed (Debian package systemd)")


def _copy(tmp: Path) -> Path:
    out = tmp / "units"
    shutil.copytree(UNITS, out)
    for unit in out.glob("*.service"):
        text = unit.read_text().replace("/usr/local/bin/tsq", f"{sys.executable} -m tsq")
        unit.write_text(text)
    # A template is verified as an instance.
    (out / "tsq-bridge@.service").rename(out / "tsq-bridge@ttyUSB0.service")
    return out


def test_units_verify(tmp_path: Path) -> None:
    units = sorted(str(u) for u in _copy(tmp_path).glob("*.service"))
    assert len(units) == 4
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                         timeout=120, env={"SYSTEMD_LOG_LEVEL": "notice", "PATH": "/usr/bin:/bin"})
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and "dev-ttyUSB0.device" not in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def test_gateway_unit_orders_before_time_sync_and_drops_privileges() -> None:
    text = (UNITS / "tsq-gateway.service").read_text()
    for line in ("Type=notify", "Before=time-sync.target", "User=tsq", "SupplementaryGroups=dialout",
                 "RuntimeDirectory=tsq", "StateDirectory=tsq", "CapabilityBoundingSet=\n",
                 "AmbientCapabilities=\n", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text, line
    clock = (UNITS / "tsq-gateway.service.d" / "clock.conf").read_text()
    assert "AmbientCapabilities=CAP_SYS_TIME" in clock


def _setting(text: str, key: str) -> str:
    values = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]
    assert values, key
    return values[-1]


def test_start_waits_longer_than_the_gateways_own_ready_timeout() -> None:
    # Found under a real systemd (.ci/systemd-lane): with systemd's default 90 s start timeout and the
    # gateway's 90 s ready timeout, a gateway whose servers were unreachable at boot was killed and
    # restarted in a loop instead of saying READY=1 and carrying on.
    text = (UNITS / "tsq-gateway.service").read_text()
    assert float(_setting(text, "TimeoutStartSec")) >= SyncConfig().ready_timeout_s + 30


@pytest.mark.parametrize("unit", ["tsq-gateway.service", "tsq-server.service", "tsq-bridge@.service"])
def test_a_configuration_error_is_not_restarted(unit: str) -> None:
    # exit 2 = a bad flag, file, pin or path (one line in the journal): restarting every few seconds
    # cannot mend it and floods the journal (seen under the real systemd of .ci/systemd-lane)
    text = (UNITS / unit).read_text()
    assert _setting(text, "Restart") == "on-failure" and _setting(text, "RestartPreventExitStatus") == "2"
