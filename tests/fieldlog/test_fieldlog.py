"""Field logs: format, rotation, compression, retention, and durability under SIGKILL."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.fieldlog import (
    DEVICE_FIELDS,
    GATEWAY_SAMPLE_FIELDS,
    FieldLog,
    ReadStats,
    log_files,
    read_rows,
    utc_iso,
)

DAY = 86_400 * 10**9
T0 = 1_795_000_000 * 10**9  # 2026-11-18


def _row(i: int) -> dict[str, object]:
    return {"server": "127.0.0.1:4433", "mode": "datagram", "offset_ns": i, "delay_ns": 2500,
            "error_bound_ns": 900, "freq_ppm": 1.25, "selection": "selected"}


def test_header_rows_and_round_trip(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "gateway-samples", GATEWAY_SAMPLE_FIELDS) as log:
        for i in range(5):
            log.write(_row(i), now_unix_ns=T0 + i * 10**9)
    (path,) = list(tmp_path.iterdir())
    assert path.name == "gateway-samples-20261118.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == "# tsq-fieldlog v1 stream=gateway-samples"
    assert lines[1] == ",".join(GATEWAY_SAMPLE_FIELDS)
    rows = list(read_rows([tmp_path], "gateway-samples"))
    assert [int(r["offset_ns"]) for r in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["time_utc"] == utc_iso(T0 + 10**9) == "2026-11-18T11:06:41.000000000Z"
    assert rows[0]["freq_ppm"] == "1.25"


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log, pytest.raises(ValueError):
        log.write({"no_such_field": 1}, now_unix_ns=T0)


def test_daily_rotation_compresses_closed_day(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        for day in range(3):
            for i in range(3):
                log.write({"device": "0x1", "residual_ns": day * 10 + i}, now_unix_ns=T0 + day * DAY + i)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["devices-20261118.csv.gz", "devices-20261119.csv.gz", "devices-20261120.csv"]
    with gzip.open(tmp_path / names[0], "rt") as f:
        assert f.readline().startswith("# tsq-fieldlog v1")
    values = [int(r["residual_ns"]) for r in read_rows([tmp_path], "devices")]
    assert values == [0, 1, 2, 10, 11, 12, 20, 21, 22]


def test_size_cap_starts_numbered_parts_in_order(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS, max_bytes=400) as log:
        for i in range(40):
            log.write({"device": "0x1", "residual_ns": i}, now_unix_ns=T0 + i)
    files = log_files([tmp_path], "devices")
    assert len(files) > 3
    assert all(p.stat().st_size <= 400 or p.name.endswith(".gz") for p in files)
    assert [int(r["residual_ns"]) for r in read_rows([tmp_path], "devices")] == list(range(40))


def test_retention_deletes_old_days(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS, retention_days=2) as log:
        for day in range(6):
            log.write({"device": "0x1", "residual_ns": day}, now_unix_ns=T0 + day * DAY)
    values = [int(r["residual_ns"]) for r in read_rows([tmp_path], "devices")]
    assert values == [3, 4, 5]


def test_torn_last_line_is_skipped_and_writer_resumes_on_a_new_line(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "a", "residual_ns": 1}, now_unix_ns=T0)
    path = tmp_path / "devices-20261118.csv"
    with open(path, "ab") as f:
        f.write(b"2026-11-18T19:06:41Z,b,")  # what a power cut mid-write can leave
    stats = ReadStats()
    assert [r["device"] for r in read_rows([tmp_path], "devices", stats)] == ["a"]
    assert stats.torn_lines == 1
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "c", "residual_ns": 3}, now_unix_ns=T0 + 1)
    stats = ReadStats()
    assert [r["device"] for r in read_rows([tmp_path], "devices", stats)] == ["a", "c"]
    assert stats.torn_lines == 0 and stats.bad_lines == 1


def test_interrupted_compression_is_recovered(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "a"}, now_unix_ns=T0)
    (tmp_path / "devices-20261118.csv.gz.tmp").write_bytes(b"\x1f\x8b partial")
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "b"}, now_unix_ns=T0 + DAY)
    assert not list(tmp_path.glob("*.tmp"))
    assert [r["device"] for r in read_rows([tmp_path], "devices")] == ["a", "b"]


def test_timer_fsyncs_without_further_writes(tmp_path: Path) -> None:
    log = FieldLog(tmp_path, "devices", DEVICE_FIELDS, fsync_interval_s=0.05)
    try:
        log.write({"device": "a"}, now_unix_ns=T0)
        deadline = time.monotonic() + 5
        while log._dirty and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not log._dirty
    finally:
        log.close()


@given(st.binary(max_size=400))
def test_reader_is_total_on_arbitrary_file_content(tail: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "devices-20261118.csv"
        path.write_bytes(b"# tsq-fieldlog v1 stream=devices\n" + ",".join(DEVICE_FIELDS).encode()
                         + b"\n" + tail)
        stats = ReadStats()
        for row in read_rows([d], "devices", stats):
            assert set(row) == set(DEVICE_FIELDS)
        (Path(d) / "devices-20261119.csv.gz").write_bytes(tail)
        list(read_rows([d], "devices", ReadStats()))


WRITER = textwrap.dedent(
    """
    import sys
    from tsq.fieldlog import FieldLog, DEVICE_FIELDS
    log = FieldLog(sys.argv[1], "devices", DEVICE_FIELDS, fsync_interval_s=0.2, max_bytes=20000)
    i = int(sys.argv[2])
    while True:
        log.write({"device": "dev", "residual_ns": i, "state": "x" * (i % 50)})
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
    """
)


def test_sigkill_at_random_moments_loses_no_acknowledged_row(tmp_path: Path) -> None:
    rng = random.Random(1234)
    acknowledged: list[int] = []
    start = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(start)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        # Wait for the writer to be running, then kill it at a random moment.
        first = proc.stdout.readline()
        assert first.strip() == str(start)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(timeout=10)
        acked = [int(first)] + [int(x) for x in rest.split("\n")[:-1]]  # a torn stdout line is not an ack
        acknowledged += acked
        start = acked[-1] + 1000  # the next writer's rows are distinguishable
    stats = ReadStats()
    seen = [int(r["residual_ns"]) for r in read_rows([tmp_path], "devices", stats)]
    assert stats.torn_lines == 0 and stats.bad_lines == 0 and not stats.problems
    assert set(acknowledged) <= set(seen)
    assert seen == sorted(seen)


def test_empty_file_from_a_kill_before_the_header_is_not_damage(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "a"}, now_unix_ns=T0)
    (tmp_path / "devices-20261118.1.csv").write_bytes(b"")  # O_CREAT done, header not yet written
    stats = ReadStats()
    assert [r["device"] for r in read_rows([tmp_path], "devices", stats)] == ["a"]
    assert not stats.problems and stats.torn_lines == 0


def test_a_writer_leaves_another_streams_compression_alone(tmp_path: Path) -> None:
    """Two writers in one directory: starting one must not delete the other's temp file mid-gzip."""
    (tmp_path / "gateway-samples-20261118.csv.gz.tmp").write_bytes(b"\x1f\x8b in progress")
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "a"}, now_unix_ns=T0)
    assert (tmp_path / "gateway-samples-20261118.csv.gz.tmp").exists()


def test_plain_and_compressed_copy_of_one_file_are_read_once(tmp_path: Path) -> None:
    """A kill between compression's rename and unlink leaves X.csv beside the complete X.csv.gz."""
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "a"}, now_unix_ns=T0)
    plain = tmp_path / "devices-20261118.csv"
    with gzip.open(plain.with_name(plain.name + ".gz"), "wb") as f:
        f.write(plain.read_bytes())
    assert [p.name for p in log_files([tmp_path], "devices")] == ["devices-20261118.csv.gz"]
    assert [r["device"] for r in read_rows([tmp_path], "devices")] == ["a"]


def test_line_breaks_inside_a_value_keep_one_row_per_line(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", DEVICE_FIELDS) as log:
        log.write({"device": "a\nb\rc", "state": "synchronised"}, now_unix_ns=T0)
        log.write({"device": "d"}, now_unix_ns=T0 + 1)
    stats = ReadStats()
    assert [r["device"] for r in read_rows([tmp_path], "devices", stats)] == ["a b c", "d"]
    assert stats.bad_lines == 0 and stats.torn_lines == 0
