"""Durable field logs: append-only CSV per stream, rotated daily and by size, old files gzipped.

Format (see docs/logs.md): the first line is `# tsq-fieldlog v1 stream=<stream>`, the second the
CSV header, then one row per line. Each row is written with a single `os.write` on an `O_APPEND`
descriptor, so a `kill -9` can never leave half a line; `fsync` runs every `fsync_interval_s`
(and on rotate/close), so a power cut loses at most that much. A power cut can leave a torn last
line: the reader skips it and counts it.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import shutil
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

from tsq.timefmt import utc_iso

FORMAT_VERSION = 1
MAGIC = "# tsq-fieldlog v"

GATEWAY_SAMPLE_FIELDS: tuple[str, ...] = (
    "time_utc", "server", "mode", "offset_ns", "delay_ns", "error_bound_ns", "freq_ppm", "selection",
)
GATEWAY_MODEL_FIELDS: tuple[str, ...] = (
    "time_utc", "state", "offset_ns", "freq_ppm", "error_bound_ns", "sources", "leap",
)
DEVICE_FIELDS: tuple[str, ...] = (
    "time_utc", "device", "residual_ns", "line_delay_ns", "bound_ns", "state",
)

PathLike = Union[str, "os.PathLike[str]"]
_NAME = re.compile(r"^(?P<stream>[A-Za-z0-9_-]+)-(?P<day>\d{8})(?:\.(?P<part>\d+))?\.csv(?P<gz>\.gz)?$")
_DAY_NS = 86_400 * 10**9


class FieldLogError(ValueError):
    """A log file that is not a TSQ field log (wrong header or version)."""


def _day(unix_ns: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(unix_ns // 10**9))


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    # One row is one line: a line break inside a value would split it for every line-based reader.
    return str(value).replace("\r", " ").replace("\n", " ")


class FieldLog:
    """Appends rows of one stream to `<dir>/<stream>-YYYYMMDD[.N].csv`."""

    def __init__(self, directory: PathLike, stream: str, fields: Sequence[str], *,
                 fsync_interval_s: float = 5.0, max_bytes: int = 64 << 20,
                 retention_days: int = 90) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", stream):
            raise ValueError(f"bad stream name {stream!r}")
        self.directory = Path(directory)
        self.stream = stream
        self.fields = tuple(fields)
        self.fsync_interval_s = fsync_interval_s
        self.max_bytes = max_bytes
        self.retention_days = retention_days
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd: Optional[int] = None
        self._path: Optional[Path] = None
        self._day = ""
        self._size = 0
        self._last_sync = time.monotonic()
        self._dirty = False
        # A timer makes rows durable within fsync_interval_s even when no further row arrives.
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None
        recover(self.directory, stream)

    # -- writing -------------------------------------------------------------------------------
    def write(self, row: Mapping[str, object], *, now_unix_ns: Optional[int] = None) -> None:
        """Append one whole line; `time_utc` defaults to `now_unix_ns` formatted as UTC."""
        now = time.time_ns() if now_unix_ns is None else now_unix_ns
        values = dict(row)
        if "time_utc" in self.fields and values.get("time_utc") is None:
            values["time_utc"] = utc_iso(now)
        unknown = set(values) - set(self.fields)
        if unknown:
            raise ValueError(f"unknown fields for {self.stream}: {sorted(unknown)}")
        line = _csv_line([_fmt(values.get(f)) for f in self.fields])
        with self._lock:
            self._ensure_file(now, len(line))
            assert self._fd is not None
            _write_all(self._fd, line)
            self._size += len(line)
            self._dirty = True
            due = time.monotonic() - self._last_sync >= self.fsync_interval_s
            if due:
                self._sync_locked()
            elif self._timer is None:
                self._timer = threading.Timer(self.fsync_interval_s, self._timed_sync)
                self._timer.daemon = True
                self._timer.start()

    def flush(self, fsync: bool = True) -> None:
        """Rows are in the kernel after write() (safe from kill -9); this makes them durable."""
        if fsync:
            with self._lock:
                self._sync_locked()

    def _timed_sync(self) -> None:
        with self._lock:
            self._timer = None
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """fsync and close the current file (it stays uncompressed until the next rotation)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd is not None:
            self._sync_locked()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FieldLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files ---------------------------------------------------------------------------------
    def _ensure_file(self, now_unix_ns: int, incoming: int) -> None:
        day = _day(now_unix_ns)
        if self._fd is not None and day == self._day and self._size + incoming <= self.max_bytes:
            return
        self._close_locked()
        self._day = day
        self._open_current(day, incoming)
        self._maintain(now_unix_ns)

    def _open_current(self, day: str, incoming: int) -> None:
        part = 0
        while True:
            path = self.directory / _file_name(self.stream, day, part)
            gz = path.with_name(path.name + ".gz")
            if not gz.exists():
                size = path.stat().st_size if path.exists() else 0
                if size == 0 or size + incoming <= self.max_bytes:
                    break
            part += 1
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size == 0:
            header = f"{MAGIC}{FORMAT_VERSION} stream={self.stream}\n".encode() + _csv_line(list(self.fields))
            _write_all(fd, header)
            os.fsync(fd)
            _fsync_dir(self.directory)
            size = len(header)
        elif size > 0:
            _terminate_torn_line(fd, path)
        self._fd, self._path, self._size = fd, path, size

    def _maintain(self, now_unix_ns: int) -> None:
        """Compress closed files of this stream and delete those past the retention limit."""
        cutoff = _day(now_unix_ns - self.retention_days * _DAY_NS)
        for path in sorted(self.directory.iterdir()):
            m = _NAME.match(path.name)
            if not m or m["stream"] != self.stream or path == self._path:
                continue
            if self.retention_days > 0 and m["day"] < cutoff:
                path.unlink()
                continue
            if not m["gz"]:
                compress(path)


def _file_name(stream: str, day: str, part: int) -> str:
    return f"{stream}-{day}.csv" if part == 0 else f"{stream}-{day}.{part}.csv"


def _csv_line(values: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()


def _write_all(fd: int, data: bytes) -> None:
    # A regular-file write is all-or-nothing in practice; loop anyway for a partial write (disk full
    # mid-line raises instead of silently tearing further).
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _terminate_torn_line(fd: int, path: Path) -> None:
    """After a power cut the file may end mid-line: end it so new rows start on their own line."""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            _write_all(fd, b"\n")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compress(path: Path) -> Path:
    """gzip `path` to `path.gz` without ever losing data: temp file, fsync, rename, then unlink."""
    final = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    with open(path, "rb") as src, open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            shutil.copyfileobj(src, gz)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, final)
    _fsync_dir(path.parent)
    path.unlink()
    return final


def recover(directory: Path, stream: str) -> None:
    """Finish what a kill during compression of `stream` left: drop its temp files; if both plain
    and .gz exist, the .gz was completed (renamed after fsync), so the plain copy goes. Only this
    stream's files: another stream's writer may be compressing in the same directory right now."""
    for path in directory.glob(f"{stream}-*.csv.gz.tmp"):
        if (m := _NAME.match(path.name[:-4])) is not None and m["stream"] == stream:
            path.unlink(missing_ok=True)
    for path in directory.glob(f"{stream}-*.csv.gz"):
        plain = path.with_name(path.name[:-3])
        if (m := _NAME.match(path.name)) is not None and m["stream"] == stream and plain.exists():
            plain.unlink(missing_ok=True)


# -- reading -----------------------------------------------------------------------------------
@dataclass
class ReadStats:
    """What the reader met besides good rows."""

    files: int = 0
    rows: int = 0
    torn_lines: int = 0
    bad_lines: int = 0
    problems: list[str] = field(default_factory=list)


def log_files(paths_or_dirs: Iterable[PathLike], stream: str) -> list[Path]:
    """All files of `stream` under the given paths, in time order (day, then part). Where a kill
    between compression's rename and unlink left both `X.csv` and the complete `X.csv.gz`, only the
    .gz is listed (the same rows)."""
    found: dict[Path, tuple[str, int, Path]] = {}
    for p in map(Path, paths_or_dirs):
        candidates = sorted(p.iterdir()) if p.is_dir() else [p]
        for path in candidates:
            m = _NAME.match(path.name)
            if m and m["stream"] == stream:
                plain = path.with_name(path.name[:-3]) if m["gz"] else path
                if m["gz"] or plain not in found:
                    found[plain] = (m["day"], int(m["part"] or 0), path)
    return [path for _, _, path in sorted(found.values())]


def open_text(path: Path) -> io.TextIOBase:
    """A log file as text; lines end at \n only (a stray \r stays inside its line)."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="\n")
    return open(path, encoding="utf-8", errors="replace", newline="\n")


def data_lines(paths_or_dirs: Iterable[PathLike], stream: str,
               stats: ReadStats) -> Iterator[tuple[list[str], str]]:
    """Every whole data line of `stream`, oldest first, with its file's header (newline removed).

    The one place that knows the file layout: an empty file (a writer killed between creating it
    and writing its header) is skipped; a file without the magic line, a torn header or last line
    (power cut), and read errors (a truncated .gz) are skipped and recorded in `stats`; so are the
    bare newlines a writer adds after a torn line."""
    for path in log_files(paths_or_dirs, stream):
        stats.files += 1
        try:
            with open_text(path) as f:
                first = f.readline()
                if first == "":
                    continue
                if not first.startswith(MAGIC):
                    stats.problems.append(f"{path}: not a tsq field log")
                    continue
                header_line = f.readline()
                if not header_line.endswith("\n"):
                    stats.torn_lines += 1
                    continue
                try:
                    header = next(csv.reader([header_line]))
                except csv.Error:
                    stats.problems.append(f"{path}: unreadable header")
                    continue
                for line in f:
                    if not line.endswith("\n"):
                        stats.torn_lines += 1
                        stats.problems.append(f"{path}: torn last line skipped")
                    elif line != "\n":
                        yield header, line[:-1]
        except (OSError, EOFError, zlib.error) as exc:  # a damaged .gz: what was readable is kept
            stats.problems.append(f"{path}: {exc}")


def read_rows(paths_or_dirs: Iterable[PathLike], stream: str,
              stats: Optional[ReadStats] = None) -> Iterator[dict[str, str]]:
    """Yield every whole row of `stream` as a dict, oldest first; what was skipped is counted in
    `stats` (see data_lines)."""
    st = stats if stats is not None else ReadStats()
    for header, line in data_lines(paths_or_dirs, stream, st):
        try:
            values = next(csv.reader([line]))
        except csv.Error:  # e.g. NUL bytes a power cut left (Python < 3.11 refuses them)
            st.bad_lines += 1
            continue
        if len(values) != len(header):
            st.bad_lines += 1
            continue
        st.rows += 1
        yield dict(zip(header, values))
