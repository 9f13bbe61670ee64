"""The field logs on disk: file names, the header, one row per line, compression, and the readers.

No threads and no policy here (tsq/fieldlog_writer.py writes, tsq/fieldlog.py is the public face).
Layout of a file (docs/logs.md):

    # tsq-fieldlog v2 stream=<stream> host=<host id> [hostname=<name>]
    <CSV header>
    <one row per line>

Version 1 files (`# tsq-fieldlog v1 stream=<stream>`, no host) are still read.
Truth logs (`truth-<device id>.log`, `truth-gateway.log`) are the simulators' own record of their
UTC against CLOCK_REALTIME: `realtime_ns utc_ns error_ns bound_ns state` per line.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
MAGIC = "# tsq-fieldlog v"

PathLike = Union[str, "os.PathLike[str]"]
NAME_RE = re.compile(r"^(?P<stream>[A-Za-z0-9_-]+)-(?P<day>\d{8})(?:\.(?P<part>\d+))?\.csv(?P<gz>\.gz)?$")
STREAM_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOKEN_BAD = re.compile(r"[^A-Za-z0-9._:-]")
DAY_NS = 86_400 * 10**9


class FieldLogError(ValueError):
    """A log file that is not a TSQ field log (wrong header or version)."""


def day_of(unix_ns: int) -> str:
    """The UTC day YYYYMMDD a row at `unix_ns` belongs to."""
    return time.strftime("%Y%m%d", time.gmtime(unix_ns // 10**9))


def file_name(stream: str, day: str, part: int) -> str:
    return f"{stream}-{day}.csv" if part == 0 else f"{stream}-{day}.{part}.csv"


def header_token(value: str) -> str:
    """A value that fits one `key=value` token of the header line (no spaces, no oddities)."""
    return _TOKEN_BAD.sub("_", value)[:64] or "_"


def header_bytes(stream: str, fields: Sequence[str], host: str, hostname: str = "") -> bytes:
    """The two header lines of a new file (format FORMAT_VERSION)."""
    first = f"{MAGIC}{FORMAT_VERSION} stream={stream} host={header_token(host)}"
    if hostname:
        first += f" hostname={header_token(hostname)}"
    return (first + "\n").encode() + csv_line(list(fields))


def parse_magic(line: str) -> Tuple[int, dict[str, str]]:
    """(version, {key: value}) of a first line; FieldLogError if it is not a field log's."""
    if not line.startswith(MAGIC):
        raise FieldLogError("not a tsq field log")
    words = line[len(MAGIC):].split()
    try:
        version = int(words[0])
    except (IndexError, ValueError):
        raise FieldLogError("not a tsq field log (no version)") from None
    attrs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    if version not in READ_VERSIONS:
        raise FieldLogError(f"format version {version} is not supported (this tsq reads "
                            f"v{READ_VERSIONS[0]}-v{READ_VERSIONS[-1]}: upgrade tsq)")
    return version, attrs


def fmt_value(value: object) -> str:
    """One cell: None is empty, floats round-trip, line breaks become spaces (one row is one line)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value).replace("\r", " ").replace("\n", " ")


def csv_line(values: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compress(path: Path, should_stop: Optional[Callable[[], bool]] = None) -> Optional[Path]:
    """gzip `path` to `path.gz` without ever losing data: temp file, fsync, rename, then unlink.

    `should_stop` is asked between chunks; if it says stop, the temp file is removed, the plain
    file stays, and None is returned. An OSError (disk full) also removes the temp file."""
    final = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                while True:
                    if should_stop is not None and should_stop():
                        break
                    chunk = src.read(1 << 18)  # large chunks: few GIL hand-overs (zlib releases it)
                    if not chunk:
                        break
                    gz.write(chunk)
            if should_stop is not None and should_stop():
                raise InterruptedError
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
    except InterruptedError:
        tmp.unlink(missing_ok=True)
        return None
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    path.unlink()
    return final


def lower_priority() -> str:
    """Lower this process's CPU (and with SCHED_IDLE, I/O) priority; says what was applied."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
        return "SCHED_IDLE"
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
        return "nice 19"
    except (AttributeError, OSError):
        return "normal priority"


def compress_main(path: str) -> int:
    """The compressor child (tsq/fieldlog_writer.py): lower its priority, say which on stdout, gzip
    `path`; an error is one line on stderr and exit status 1."""
    print(lower_priority(), flush=True)
    try:
        compress(Path(path))
    except OSError as exc:
        print(os_error_line(exc, "compressing"), file=sys.stderr)
        return 1
    return 0


def recover(directory: Path, stream: str) -> None:
    """Finish what a kill during compression of `stream` left: drop its temp files; if both plain
    and .gz exist, the .gz was completed (renamed after fsync), so the plain copy goes. Only this
    stream's files: another stream's writer may be compressing in the same directory right now."""
    for path in directory.glob(f"{stream}-*.csv.gz.tmp"):
        m = NAME_RE.match(path.name[:-4])
        if m is not None and m["stream"] == stream:
            path.unlink(missing_ok=True)
    for path in directory.glob(f"{stream}-*.csv.gz"):
        plain = path.with_name(path.name[:-3])
        m = NAME_RE.match(path.name)
        if m is not None and m["stream"] == stream and plain.exists():
            plain.unlink(missing_ok=True)


def os_error_line(exc: OSError, doing: str) -> str:
    """One line for an OSError: 'No space left on device (ENOSPC) writing /x/devices-….csv'."""
    name = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f" {exc.filename}" if exc.filename else ""
    return f"{what}{f' ({name})' if name else ''} {doing}{where}".replace("\n", " ")


# -- reading -----------------------------------------------------------------------------------
@dataclass
class ReadStats:
    """What the reader met besides good rows. `errors` are inputs that are not readable logs at all
    (an unreadable directory, a file that is not a field log, a format version this tsq does not
    know); `problems` lists those and the damage a power cut leaves (torn lines, a truncated .gz)."""

    files: int = 0
    rows: int = 0
    torn_lines: int = 0
    bad_lines: int = 0
    problems: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if text not in self.errors:  # one directory is listed once per stream
            self.errors.append(text)
            self.problems.append(text)


@dataclass(frozen=True)
class LogFile:
    """One field-log file as its header describes it. `host` is the gateway's host id (v2), or for
    a v1 file (no host id) 'dir:' and its directory, so two gateways' v1 logs stay apart."""

    path: Path
    stream: str
    version: int
    host: str
    hostname: str
    columns: Tuple[str, ...]


def log_files(paths_or_dirs: Iterable[PathLike], stream: str,
              stats: Optional[ReadStats] = None) -> List[Path]:
    """All files of `stream` under the given paths, in time order (day, then part). Where a kill
    between compression's rename and unlink left both `X.csv` and the complete `X.csv.gz`, only the
    .gz is listed (the same rows). A directory that cannot be listed is an error in `stats`."""
    found: dict[Path, Tuple[str, str, int, Path]] = {}
    for p in map(Path, paths_or_dirs):
        try:
            candidates = sorted(p.iterdir()) if p.is_dir() else [p]
        except OSError as exc:
            if stats is not None:
                stats.error(f"{p}: cannot list the directory: {exc.strerror or exc}")
            continue
        for path in candidates:
            m = NAME_RE.match(path.name)
            if m and m["stream"] == stream:
                plain = path.with_name(path.name[:-3]) if m["gz"] else path
                if m["gz"] or plain not in found:
                    found[plain] = (str(path.parent), m["day"], int(m["part"] or 0), path)
    return [path for _, _, _, path in sorted(found.values())]


def open_text(path: Path) -> io.TextIOBase:
    """A log file as text; lines end at \\n only (a stray \\r stays inside its line)."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="\n")
    return open(path, encoding="utf-8", errors="replace", newline="\n")


def data_chunks(paths_or_dirs: Iterable[PathLike], stream: str, stats: ReadStats,
                chunk_bytes: int = 1 << 20) -> Iterator[Tuple[LogFile, List[str]]]:
    """Every whole data line of `stream`, oldest first, in lists of about `chunk_bytes` (newlines
    removed), each with its file; one LogFile object per file, so a caller can tell a new file by
    identity.

    The one place that knows the file layout: an empty file (a writer killed between creating it
    and writing its header) is skipped; a file without the magic line or of an unknown version is an
    error in `stats`; a torn header or last line (power cut) and read errors (a truncated .gz) are
    skipped and recorded; so are the bare newlines a writer adds after a torn line."""
    for path in log_files(paths_or_dirs, stream, stats):
        stats.files += 1
        try:
            with open_text(path) as f:
                first = f.readline()
                if first == "":
                    continue
                try:
                    version, attrs = parse_magic(first)
                except FieldLogError as exc:
                    stats.error(f"{path}: {exc}")
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
                host = attrs.get("host", "") if version >= 2 else ""
                info = LogFile(path, stream, version, host or f"dir:{path.parent}", attrs.get("hostname", ""),
                               tuple(header))
                while True:
                    lines = f.readlines(chunk_bytes)
                    if not lines:
                        break
                    if not lines[-1].endswith("\n"):  # only a file's last line can lack its newline
                        lines.pop()
                        stats.torn_lines += 1
                        stats.problems.append(f"{path}: torn last line skipped")
                    yield info, [line[:-1] for line in lines if line != "\n"]
        except PermissionError as exc:
            stats.error(f"{path}: cannot read: {exc.strerror or exc}")
        except (OSError, EOFError, zlib.error) as exc:  # a damaged .gz: what was readable is kept
            stats.problems.append(f"{path}: {exc}")


def data_lines(paths_or_dirs: Iterable[PathLike], stream: str,
               stats: ReadStats) -> Iterator[Tuple[LogFile, str]]:
    """Every whole data line of `stream`, oldest first, with its file (see data_chunks)."""
    for info, lines in data_chunks(paths_or_dirs, stream, stats):
        for line in lines:
            yield info, line


def read_rows(paths_or_dirs: Iterable[PathLike], stream: str,
              stats: Optional[ReadStats] = None) -> Iterator[dict[str, str]]:
    """Yield every whole row of `stream` as a dict, oldest first; what was skipped is counted in
    `stats` (see data_lines)."""
    st = stats if stats is not None else ReadStats()
    for info, line in data_lines(paths_or_dirs, stream, st):
        try:
            values = next(csv.reader([line]))
        except csv.Error:  # e.g. NUL bytes a power cut left (Python < 3.11 refuses them)
            st.bad_lines += 1
            continue
        if len(values) != len(info.columns):
            st.bad_lines += 1
            continue
        st.rows += 1
        yield dict(zip(info.columns, values))


# -- truth logs (simulators only: a real device cannot read the true time) ----------------------
TRUTH_RE = re.compile(r"^truth-(?P<id>gateway|(?:0x)?[0-9A-Fa-f]{1,16})\.log$")
TRUTH_STATES = {0: "unsynchronised", 1: "synchronised", 2: "holdover", 3: "booting"}
TRUTH_SERVING = (1, 2)


def truth_line(realtime_ns: int, utc_ns: Optional[int], bound_ns: Optional[int], state: int) -> str:
    """One truth-log line as the firmware's host build writes it (ports/posix/main.c): the clock's
    UTC at CLOCK_REALTIME `realtime_ns`, its error (UTC minus realtime), its own bound, and its state
    (0 unsynchronised, 1 synchronised, 2 holdover, 3 booting); '-' where the clock has no UTC."""
    if utc_ns is None or bound_ns is None:
        return f"{realtime_ns} - - - {state}\n"
    return f"{realtime_ns} {utc_ns} {utc_ns - realtime_ns} {bound_ns} {state}\n"


def parse_truth_line(line: str) -> Optional[Tuple[int, Optional[int], Optional[int], int]]:
    """(realtime_ns, error_ns, bound_ns, state), or None for a line that does not parse."""
    parts = line.split()
    if len(parts) != 5:
        return None
    try:
        rt, state = int(parts[0]), int(parts[4])
        if parts[2] == "-" or parts[3] == "-":
            return rt, None, None, state
        return rt, int(parts[2]), int(parts[3]), state
    except ValueError:
        return None


def truth_clock(path: Path) -> Optional[str]:
    """'gateway' or the device id as 0x%08x for a truth-log file name; None if it is not one."""
    m = TRUTH_RE.match(path.name)
    if m is None:
        return None
    ident = m["id"]
    return "gateway" if ident == "gateway" else f"0x{int(ident, 16):08x}"
