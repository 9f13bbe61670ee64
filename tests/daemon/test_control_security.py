"""Where the control socket may live and who may trust it (issue 15): a directory another user owns
or can write is refused by the daemon and by `tsq status`, the socket is 0660 whatever the umask,
and a user without access gets a one-line reason, not a traceback."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from tsq.gateway.control import ControlError, ControlServer, check_directory, query_status
from tsq.testing.daemon import subprocess_env

NOBODY = 65534
STATUS: Dict[str, Any] = {"version": 1, "state": "synchronised"}


def _serve_and_query(path: str) -> Dict[str, Any]:
    async def go() -> Dict[str, Any]:
        server = ControlServer(path, lambda: STATUS)
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, query_status, path)
        finally:
            await server.close()

    return asyncio.run(go())


def test_socket_is_0660_whatever_the_umask(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "control.sock")
    old = os.umask(0)
    try:
        async def go() -> int:
            server = ControlServer(path, lambda: STATUS)
            await server.start()
            mode = stat.S_IMODE(os.stat(path).st_mode)
            await server.close()
            return mode

        mode = asyncio.run(go())
    finally:
        os.umask(old)
    assert mode == 0o660
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o755  # made without group/other write


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_directory_owned_by_another_user_is_refused_by_daemon_and_client(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = str(run / "control.sock")
    assert _serve_and_query(good) == STATUS          # root's own directory: fine
    os.chown(run, NOBODY, NOBODY)                    # a local user now controls the directory ...
    with pytest.raises(ControlError, match="owned by uid 65534"):
        _serve_and_query(good)
    with pytest.raises(ControlError, match="owned by uid 65534"):
        query_status(good)                           # ... and root's `tsq status` will not trust it


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_directory_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, mode)
    with pytest.raises(ControlError, match="writable by others"):
        check_directory(str(run))


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ControlError, match="not a plain directory"):
        check_directory(str(tmp_path / "link"))


def _python_runs_as_nobody() -> bool:
    try:
        subprocess.run([sys.executable, "-c", "pass"], user=NOBODY, group=NOBODY, cwd="/", timeout=30,
                       capture_output=True, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_a_user_without_access_gets_one_line(tmp_path: Path) -> None:
    if not _python_runs_as_nobody():
        pytest.skip(f"{sys.executable} is not executable by uid {NOBODY} on this machine")
    tmp_path.chmod(0o755)
    run = tmp_path / "run"
    path = str(run / "control.sock")

    async def go() -> subprocess.CompletedProcess[str]:
        server = ControlServer(path, lambda: STATUS)
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, lambda: subprocess.run(
                [sys.executable, "-m", "tsq", "status", "--control", path], capture_output=True,
                text=True, timeout=60, env=subprocess_env(), user=NOBODY, group=NOBODY,
                cwd="/"))
        finally:
            await server.close()

    out = asyncio.run(go())
    assert out.returncode == 1
    assert "permission denied" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
