"""A failing disk degrades the log only: real full disks, read-only remounts, removed directories.

The disk is a 256 KiB tmpfs each test mounts (root only; skipped, with the reason, where mount is
not permitted). Nothing is mocked: the writer meets the kernel's own ENOSPC, short writes, EROFS,
ENOENT and ENOTDIR.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tsq.fieldlog import DEVICE_FIELDS, FieldLog, ReadStats, log_files, read_rows
from tsq.fieldlog_files import csv_line, fmt_value
from tsq.timefmt import utc_iso

T0 = 1_795_000_000 * 10**9  # 2026-11-18
PAGE = 4096


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted for this test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a test tmpfs needs root and mount(8)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = _mount("-t", "tmpfs", "-o", "size=256k,mode=0755", "tsq-test-disk", str(mnt))
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        _mount("-o", "remount,rw", str(mnt))
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk says ENOSPC; returns it (unlink it to free the disk)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * PAGE)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def remount(disk: Path, mode: str) -> None:
    """remount ro|rw; a remount to ro is refused (EBUSY) while a file is open for writing: retry."""
    for _ in range(100):
        r = _mount("-o", f"remount,{mode}", str(disk))
        if r.returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"remount,{mode} failed: {r.stderr.strip()}")


def wait_for(cond: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def row(i: int, length: int = 0) -> dict[str, object]:
    """A device row; with `length`, padded so its line is exactly that many bytes."""
    r: dict[str, object] = {"time_utc": T0 + i * 10**6, "raw_ns": 10**12 + i * 10**6, "device": "0xd0000001",
                            "residual_ns": i, "line_delay_ns": 90_000, "bound_ns": 12_000,
                            "state": "synchronised", "poll_s": 0.25}
    if length:
        def line() -> bytes:  # as FieldLog formats it
            cells = {**r, "time_utc": utc_iso(T0 + i * 10**6), "utc_source": "model"}
            return csv_line([fmt_value(cells.get(f)) for f in DEVICE_FIELDS])
        r["state"] = "synchronised" + "_" * (length - len(line()))
        assert len(line()) == length
    return r


def values(directory: Path) -> list[int]:
    stats = ReadStats()
    out = [int(r["residual_ns"]) for r in read_rows([directory], "devices", stats)]
    assert stats.torn_lines == 0 and stats.bad_lines == 0 and not stats.problems, stats
    return out


def whole_lines_only(directory: Path) -> None:
    for path in log_files([directory], "devices"):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} ends mid-line: {data[-40:]!r}"


def test_disk_full_mid_run_truncates_the_short_write_and_resumes(small_disk: Path) -> None:
    logdir = small_disk / "log"
    log = FieldLog(logdir, "devices", fsync_interval_s=0.05, host_id="gw-test")
    try:
        for i in range(20):
            assert log.write(row(i, 100))
        assert log.flush() and log.health.ok
        fill(small_disk)
        size = next(iter(log_files([logdir], "devices"))).stat().st_size
        slack = -size % PAGE
        length = next(n for n in (100, 97, 91) if slack % n)  # so one row must cross into a page the
        # full disk does not have: a short write, by construction
        t_write = 0.0
        for i in range(20, 200):
            t = time.monotonic()
            assert log.write(row(i, length))  # never raises, never blocks
            t_write = max(t_write, time.monotonic() - t)
        wait_for(lambda: not log.health.ok)
        h = log.health
        assert h.error is not None and ("ENOSPC" in h.error or "short write" in h.error), h
        assert h.failing_since_unix_ns is not None and h.rows_pending > 0
        assert log._writer.short_writes >= 1
        whole_lines_only(logdir)  # the short write was truncated back to the last whole line
        assert not log.flush(timeout_s=1.0)  # nothing is acknowledged while the disk is full
        (small_disk / "filler").unlink()
        wait_for(lambda: log.health.ok)
        assert log.flush()
        h = log.health
        assert h.rows_dropped == 0 and h.rows_pending == 0 and h.error is not None
        assert values(logdir) == list(range(200))
        assert t_write < 0.5, t_write  # a queue append, even on a loaded machine
    finally:
        log.close()


def test_disk_full_at_start_and_a_full_queue_drops_and_counts(small_disk: Path) -> None:
    fill(small_disk)
    logdir = small_disk / "log"
    log = FieldLog(logdir, "devices", fsync_interval_s=0.05, queue_rows=50)  # never raises
    try:
        accepted = [i for i in range(500) if log.write(row(i))]
        wait_for(lambda: not log.health.ok)
        h = log.health
        assert "ENOSPC" in (h.error or ""), h
        assert 50 <= len(accepted) < 500 and h.rows_dropped == 500 - len(accepted) == 500 - h.rows_accepted
        whole_lines_only(logdir)
        (small_disk / "filler").unlink()
        wait_for(lambda: log.health.ok)
        assert log.flush()
        assert values(logdir) == accepted  # what was accepted, in order, header first
        assert log.health.rows_dropped == 500 - len(accepted)
    finally:
        log.close()


def test_read_only_remount_at_start_and_mid_run(small_disk: Path) -> None:
    logdir = small_disk / "log"
    remount(small_disk, "ro")
    log = FieldLog(logdir, "devices", fsync_interval_s=0.05)  # the directory cannot be created
    try:
        log.write(row(0))
        wait_for(lambda: not log.health.ok)
        assert "EROFS" in (log.health.error or ""), log.health
        remount(small_disk, "rw")
        wait_for(lambda: log.health.ok)
        assert log.flush()
        # mid-run: the file is closed after each fsync, so the kernel lets the remount happen
        remount(small_disk, "ro")
        for i in range(1, 30):
            log.write(row(i))
        wait_for(lambda: not log.health.ok)
        assert "EROFS" in (log.health.error or ""), log.health
        remount(small_disk, "rw")
        wait_for(lambda: log.health.ok)
        assert log.flush()
        assert values(logdir) == list(range(30))
    finally:
        log.close()


def test_removed_directory_is_recreated(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    log = FieldLog(logdir, "devices", fsync_interval_s=60)  # the file stays open between rows
    try:
        for i in range(5):
            log.write(row(i))
        assert log.flush(fsync=False)
        shutil.rmtree(logdir)
        for i in range(5, 10):
            log.write(row(i))
        assert log.flush()
        assert values(logdir) == list(range(5, 10))  # the rows before the rm went with it
        assert log.health.ok
    finally:
        log.close()


def test_directory_that_cannot_be_created_at_start(tmp_path: Path) -> None:
    (tmp_path / "parent").write_text("a file where the log's parent directory should be")
    logdir = tmp_path / "parent" / "log"
    log = FieldLog(logdir, "devices", fsync_interval_s=0.05)
    try:
        log.write(row(0))
        wait_for(lambda: not log.health.ok)
        assert "ENOTDIR" in (log.health.error or "") or "EEXIST" in (log.health.error or ""), log.health
        (tmp_path / "parent").unlink()
        wait_for(lambda: log.health.ok)
        assert log.flush()
        assert values(logdir) == [0]
    finally:
        log.close()


def test_close_on_a_failing_disk_returns_and_counts_what_was_left(small_disk: Path) -> None:
    fill(small_disk)
    log = FieldLog(small_disk / "log", "devices", fsync_interval_s=0.05)
    for i in range(10):
        log.write(row(i))
    wait_for(lambda: not log.health.ok)
    t = time.monotonic()
    log.close(timeout_s=2.0)
    assert time.monotonic() - t < 10
    assert log.health.rows_dropped == 10
    assert not log.write(row(11))
