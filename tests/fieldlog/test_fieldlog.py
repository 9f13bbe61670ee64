"""Field logs: format, rotation, compression, retention, and durability under SIGKILL."""

from __future__ import annotations

import gzip
import os
import random
import signal
import socket
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
    data_lines,
    host_id,
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
    with FieldLog(tmp_path, "gateway-samples", GATEWAY_SAMPLE_FIELDS, host_id="gw-17") as log:
        for i in range(5):
            log.write(_row(i), now_unix_ns=T0 + i * 10**9)
    (path,) = list(tmp_path.iterdir())
    assert path.name == "gateway-samples-20261118.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == f"# tsq-fieldlog v2 stream=gateway-samples host=gw-17 hostname={socket.gethostname()}"
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
        assert f.readline().startswith("# tsq-fieldlog v2")
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
        while log.health.rows_synced < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.health.rows_synced == 1
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


# Acknowledged = flush(fsync=False) returned True: every row queued before it is in the kernel.
# Rows go in bursts of 1-7 before each flush, so the writer thread takes batches of them.
WRITER = textwrap.dedent(
    """
    import sys
    from tsq.fieldlog import FieldLog, DEVICE_FIELDS
    log = FieldLog(sys.argv[1], "devices", DEVICE_FIELDS, fsync_interval_s=0.2, max_bytes=20000)
    i = int(sys.argv[2])
    while True:
        burst = list(range(i, i + 1 + i % 7))
        for k in burst:
            assert log.write({"device": "dev", "residual_ns": k, "state": "x" * (k % 50)})
        assert log.flush(fsync=False)
        sys.stdout.write("".join(f"{k}\\n" for k in burst))
        sys.stdout.flush()
        i = burst[-1] + 1
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
        assert first.strip() == str(start), first
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


V1_FILE = ("# tsq-fieldlog v1 stream=devices\n"
           "time_utc,device,residual_ns,line_delay_ns,bound_ns,state\n"
           "2026-11-18T11:06:40.000000000Z,0x00c0ffee,-312,90000,5000,synchronised\n")


def test_version_1_files_are_still_read(tmp_path: Path) -> None:
    (tmp_path / "devices-20261118.csv").write_text(V1_FILE)
    stats = ReadStats()
    (r,) = read_rows([tmp_path], "devices", stats)
    assert r["residual_ns"] == "-312" and "raw_ns" not in r
    ((info, _),) = list(data_lines([tmp_path], "devices", ReadStats()))
    assert info.version == 1 and info.host == f"dir:{tmp_path}"  # no host id: the directory stands in


def test_a_version_1_file_of_the_same_day_is_never_appended_to(tmp_path: Path) -> None:
    (tmp_path / "devices-20261118.csv").write_text(V1_FILE)
    with FieldLog(tmp_path, "devices", host_id="gw") as log:
        log.write({"device": "0x1", "residual_ns": 7}, now_unix_ns=T0)
    # left as it was (then compressed: it is no longer the stream's latest file)
    with gzip.open(tmp_path / "devices-20261118.csv.gz", "rt") as f:
        assert f.read() == V1_FILE
    assert (tmp_path / "devices-20261118.1.csv").exists()
    versions = [info.version for info, _ in data_lines([tmp_path], "devices", ReadStats())]
    assert versions == [1, 2]
    assert [r["residual_ns"] for r in read_rows([tmp_path], "devices")] == ["-312", "7"]


def test_an_unknown_version_or_a_foreign_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "devices-20261118.csv").write_text("# tsq-fieldlog v9 stream=devices\na\n1\n")
    (tmp_path / "devices-20261119.csv").write_text("time,value\n1,2\n")
    stats = ReadStats()
    assert list(read_rows([tmp_path], "devices", stats)) == []
    assert len(stats.errors) == 2
    assert "format version 9 is not supported" in stats.errors[0]
    assert "not a tsq field log" in stats.errors[1]


def test_an_unreadable_directory_is_an_error_not_an_exception(tmp_path: Path) -> None:
    stats = ReadStats()
    assert list(read_rows([tmp_path / "nope", tmp_path], "devices", stats)) == []
    # a path that does not exist is no directory and no log file: nothing to read, no crash
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0)
        list(read_rows([locked], "devices", stats))
        assert any("cannot list" in e for e in stats.errors)


def test_host_id_override_environment_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert host_id("gw-17") == "gw-17"
    monkeypatch.setenv("TSQ_HOST_ID", "from-env")
    assert host_id() == "from-env"
    monkeypatch.delenv("TSQ_HOST_ID")
    default = host_id()
    machine_id = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    if machine_id:
        assert len(default) == 16 and int(default, 16) >= 0 and default not in machine_id
    with FieldLog(tmp_path, "devices") as log:
        log.write({"device": "0x1"}, now_unix_ns=T0)
    ((info, _),) = list(data_lines([tmp_path], "devices", ReadStats()))
    assert info.host == default and info.hostname == socket.gethostname()


def test_model_utc_and_system_fallback_are_labelled(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices") as log:
        log.write({"device": "0x1", "time_utc": T0 + 5, "raw_ns": 123}, now_unix_ns=T0 + DAY)
        log.write({"device": "0x1", "time_utc": None, "raw_ns": 124}, now_unix_ns=T0 + 7)
    rows = list(read_rows([tmp_path], "devices"))
    assert [(r["time_utc"], r["utc_source"], r["raw_ns"]) for r in rows] == [
        (utc_iso(T0 + 5), "model", "123"), (utc_iso(T0 + 7), "system", "124")]
    # the row's own UTC picks the file, not the wall clock of the call
    assert [p.name for p in log_files([tmp_path], "devices")] == ["devices-20261118.csv"]


def test_streams_of_one_directory_share_one_writer_and_health(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices") as a, FieldLog(tmp_path, "gateway-model") as b:
        assert a._writer is b._writer
        a.write({"device": "0x1"}, now_unix_ns=T0)
        b.write({"state": "synchronised"}, now_unix_ns=T0)
        assert a.flush(fsync=False) and b.flush()
        h = a.health
        assert h.ok and h.rows_accepted == h.rows_written == 2 and h.rows_synced == 2
        assert h.to_json()["rows_dropped"] == 0
        with pytest.raises(ValueError, match="already open"):
            FieldLog(tmp_path, "devices")


def test_compression_runs_in_a_low_priority_child(tmp_path: Path) -> None:
    """The gzip runs in a child process that lowers its own priority (the child reports what it
    applied); an idle-priority thread in this process could stall the event loop holding the GIL."""
    with FieldLog(tmp_path, "devices") as log:
        log.write({"device": "0x1"}, now_unix_ns=T0)
        log.write({"device": "0x1"}, now_unix_ns=T0 + DAY)
        assert log.flush()
        deadline = time.monotonic() + 10
        while not log.health.compressor and time.monotonic() < deadline:  # said once the child is done
            time.sleep(0.01)
        assert (tmp_path / "devices-20261118.csv.gz").exists()
        compressor = log.health.compressor
    if sys.platform.startswith("linux"):
        assert compressor == "child process, SCHED_IDLE"
    else:
        assert compressor in ("child process, nice 19", "child process, normal priority")


def test_no_numpy_needed_to_write_or_read(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["numpy"] = None  # any import of numpy now fails
        from tsq.cli import build_parser
        build_parser()  # every subcommand's module, tsq report's included
        from tsq.fieldlog import FieldLog, read_rows
        with FieldLog(sys.argv[1], "devices") as log:
            log.write({"device": "0x1", "residual_ns": 5})
        print([r["residual_ns"] for r in read_rows([sys.argv[1]], "devices")])
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['5']"


def test_close_during_a_long_compression_loses_nothing(tmp_path: Path) -> None:
    with FieldLog(tmp_path, "devices", max_bytes=1 << 30) as log:
        for i in range(120_000):  # ~10 MB for yesterday
            log.write({"device": "0x1", "residual_ns": i, "state": "x" * 20}, now_unix_ns=T0)
            if i % 2000 == 0:
                log.flush(fsync=False)
        log.write({"device": "0x1", "residual_ns": -1}, now_unix_ns=T0 + DAY)  # rotation: gzip starts
        assert log.flush()
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob("*.gz.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert list(tmp_path.glob("*.gz.tmp")), "the gzip child never started"
        t = time.monotonic()
        log.close(timeout_s=0.05)  # too short for the gzip: it is stopped
        assert time.monotonic() - t < 5
    deadline = time.monotonic() + 10  # the child is killed at once; its temp file removed after it
    while list(tmp_path.glob("*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "devices-20261118.csv").exists()
    values = [int(r["residual_ns"]) for r in read_rows([tmp_path], "devices")]
    assert values == [*range(120_000), -1]


@given(st.text(max_size=200))
def test_header_and_truth_parsers_are_total(text: str) -> None:
    from tsq.fieldlog_files import FieldLogError, parse_magic, parse_truth_line

    try:
        version, attrs = parse_magic(text)
        assert version in (1, 2) and isinstance(attrs, dict)
    except FieldLogError:
        pass
    parsed = parse_truth_line(text)
    assert parsed is None or len(parsed) == 4


def test_a_compressor_child_that_cannot_start_falls_back_to_this_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tsq.fieldlog_writer as writer

    # a child that dies before it says anything (as when it cannot import tsq); patching only the
    # path would not do where tsq is installed in site-packages (tox), which -I still searches
    monkeypatch.setattr(writer, "_CHILD", "import sys; sys.exit('ImportError: No module named tsq')")
    with FieldLog(tmp_path, "devices") as log:
        log.write({"device": "0x1", "residual_ns": 1}, now_unix_ns=T0)
        log.write({"device": "0x1", "residual_ns": 2}, now_unix_ns=T0 + DAY)
        assert log.flush()
    assert (tmp_path / "devices-20261118.csv.gz").exists()
    assert log.health.compressor == "in this process, normal priority"
    assert [r["residual_ns"] for r in read_rows([tmp_path], "devices")] == ["1", "2"]
