"""tsq.atomicfile: a real file replaced whole, its mode set, no temporary left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tsq.atomicfile import write_atomic


def test_replaces_the_file_whole_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "drift"
    target.write_bytes(b"old contents, longer than the new")
    write_atomic(str(target), b"new", mode=0o640)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["drift"]


def test_a_failed_replace_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics"
    target.mkdir()                    # os.replace of a file onto a directory fails
    with pytest.raises(OSError):
        write_atomic(str(target), b"x" * 100_000, durable=False)
    assert os.listdir(tmp_path) == ["metrics"]


def test_names_never_collide(tmp_path: Path) -> None:
    for i in range(200):
        write_atomic(str(tmp_path / "f"), str(i).encode(), durable=False)
    assert (tmp_path / "f").read_bytes() == b"199"
    assert os.listdir(tmp_path) == ["f"]
