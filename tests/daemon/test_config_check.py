"""`tsq config check` (issue 15): a valid file and its drop-ins print the effective settings and exit
0; each kind of problem is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tsq.testing.daemon import subprocess_env


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsq", "config", "check", str(path)], capture_output=True,
                          text=True, timeout=60, env=subprocess_env())


def test_a_valid_file_with_a_drop_in(tmp_path: Path) -> None:
    main = tmp_path / "tsq.toml"
    main.write_text('servers = ["a.example:4433"]\nmaxpoll = 6\n[trust]\ninsecure = true\n')
    (tmp_path / "tsq.d").mkdir()
    (tmp_path / "tsq.d" / "50-site.toml").write_text('maxpoll = 8\n[bridge]\nports = ["/dev/ttyUSB7"]\n')
    out = _check(main)
    assert out.returncode == 0, out.stderr
    assert "maxpoll = 8" in out.stdout and "ports = ['/dev/ttyUSB7']" in out.stdout
    assert "50-site.toml" in out.stdout and "does not exist now" in out.stderr   # a note, not an error


@pytest.mark.parametrize("text, says", [
    ('servers = ["a:1"]\n[trust]\npin = "nope"\n', "pin 'nope'"),
    ('servers = ["a:1"]\n[trust]\nca = "/nonexistent/ca.pem"\n', "No such file"),
    ('servers = ["a:1"]\nmode = "carrier-pigeon"\n', "mode must be"),
    ('servers = ["a:1"]\nunknown_key = 1\n', "unknown setting"),
    ('[bridge]\nports = ["/dev/ttyS0"]\n', "needs `servers`"),
    ('minpoll = 1\n', "nothing to do"),
    ('servers = ["a:1"]\n[trust]\nrequire_signature = true\n', "needs --verify-key"),
    ('servers = [', "Invalid value"),
])
def test_problems_are_one_line_each_and_exit_2(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "tsq.toml"
    path.write_text(text)
    out = _check(path)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    out = _check(tmp_path / "absent.toml")
    assert out.returncode == 2 and "No such file" in out.stderr and len(out.stderr.splitlines()) == 1


def test_the_file_may_be_named_with_config_as_for_the_gateway(tmp_path: Path) -> None:
    main = tmp_path / "tsq.toml"
    main.write_text('servers = ["a.example:4433"]\n[trust]\ninsecure = true\n')
    out = subprocess.run([sys.executable, "-m", "tsq", "config", "check", "--config", str(main)],
                         capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert out.returncode == 0 and f"{main}: valid" in out.stdout, out.stderr
    both = subprocess.run([sys.executable, "-m", "tsq", "config", "check", str(main), "--config", "/x"],
                          capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "once" in both.stderr
