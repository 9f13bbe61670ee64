"""Durable field logs: append-only CSV per stream, rotated daily and by size, old files gzipped.

The public face: the streams and their columns (format v2, docs/logs.md), the row dicts producers
build (`SampleRow`, `ModelRow`, `DeviceRow`), `FieldLog` and its `LogHealth`, the gateway's host id,
and the readers. The files themselves: tsq/fieldlog_files.py; the writer thread:
tsq/fieldlog_writer.py.

Durability: `write()` only queues the row (it never blocks and never raises for I/O); the
directory's thread writes every row with a single `write(2)` of one whole line on an `O_APPEND`
descriptor, so a `kill -9` can never leave half a line, and fsyncs within `fsync_interval_s`.
Acknowledged rows: `flush(fsync=False)` returns True once every row queued before it is in the
kernel (survives kill -9), `flush()` once it is on disk (survives a power cut). A power cut can
leave a torn last line: the reader skips it and counts it. A failing disk degrades the log only
(`health`). numpy is not needed here.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import hmac
import os
import socket
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple, TypedDict

from tsq.fieldlog_files import (
    FORMAT_VERSION,
    MAGIC,
    READ_VERSIONS,
    STREAM_RE,
    FieldLogError,
    LogFile,
    PathLike,
    ReadStats,
    compress,
    csv_line,
    data_lines,
    day_of,
    fmt_value,
    header_bytes,
    log_files,
    open_text,
    read_rows,
    recover,
)
from tsq.fieldlog_writer import DEFAULT_QUEUE_ROWS, DirectoryWriter, LogHealth, StreamOptions
from tsq.timefmt import utc_iso

__all__ = [
    "DEVICES", "DEVICE_FIELDS", "FORMAT_VERSION", "GATEWAY_MODEL", "GATEWAY_MODEL_FIELDS",
    "GATEWAY_SAMPLES", "GATEWAY_SAMPLE_FIELDS", "MAGIC", "READ_VERSIONS", "STREAM_FIELDS", "DeviceRow",
    "FieldLog", "FieldLogError", "LogFile", "LogHealth", "ModelRow", "ReadStats", "SampleRow",
    "compress", "data_lines", "host_id", "log_files", "open_text", "read_rows", "recover", "utc_iso",
]

GATEWAY_SAMPLES = "gateway-samples"
GATEWAY_MODEL = "gateway-model"
DEVICES = "devices"

# v1's columns first, in v1's order; v2 only adds at the end (readers go by the header anyway).
_TIME = ("raw_ns", "utc_source", "poll_s")
GATEWAY_SAMPLE_FIELDS: Tuple[str, ...] = (
    "time_utc", "server", "mode", "offset_ns", "delay_ns", "error_bound_ns", "freq_ppm", "selection",
    *_TIME,
)
GATEWAY_MODEL_FIELDS: Tuple[str, ...] = (
    "time_utc", "state", "offset_ns", "freq_ppm", "error_bound_ns", "sources", "leap",
    *_TIME, "freq_error_ppm", "reason",
)
DEVICE_FIELDS: Tuple[str, ...] = (
    "time_utc", "device", "residual_ns", "line_delay_ns", "bound_ns", "state",
    *_TIME,
)
STREAM_FIELDS: Dict[str, Tuple[str, ...]] = {
    GATEWAY_SAMPLES: GATEWAY_SAMPLE_FIELDS, GATEWAY_MODEL: GATEWAY_MODEL_FIELDS, DEVICES: DEVICE_FIELDS,
}


class _Timed(TypedDict, total=False):
    # The one timescale: `time_utc` is the model's UTC (unix ns, an int) at the CLOCK_MONOTONIC_RAW
    # instant `raw_ns`. None: the model has no UTC yet; the writer then puts the system clock's time
    # and utc_source "system" (else "model"). `poll_s`: seconds until this producer's next row is
    # due, as scheduled when this one was written (gaps and coverage are measured against it).
    time_utc: Optional[int]
    raw_ns: int
    poll_s: float


class SampleRow(_Timed, total=False):
    """`gateway-samples`: one accepted exchange with a server."""

    server: str                      # "host:port" as configured
    mode: str                        # "datagram" or "stream"
    offset_ns: Optional[int]         # server's UTC minus the model's, before this sample's update
    delay_ns: int                    # round trip
    error_bound_ns: Optional[int]    # the model's bound at raw_ns
    freq_ppm: Optional[float]        # the model's frequency
    selection: Optional[str]         # selected / usable / falseticker / ...


class ModelRow(_Timed, total=False):
    """`gateway-model`: one model update (selection round), including 'cannot decide'."""

    state: str                       # synchronised / holdover / unsynchronised
    offset_ns: Optional[int]         # system clock minus model UTC
    freq_ppm: Optional[float]
    freq_error_ppm: Optional[float]  # the frequency's own uncertainty
    error_bound_ns: Optional[int]
    sources: str                     # as status shows it, e.g. "2/3"
    leap: int
    reason: Optional[str]            # why not synchronised / why no decision, in words


class DeviceRow(_Timed, total=False):
    """`devices`: one accepted ping exchange with a device (and the TIMESCALE it led to)."""

    device: str                      # device id as 0x%08x
    state: str                       # the session's: handshake / tracking / synchronised / holdover / ...
    bound_ns: Optional[int]          # the bound sent to the device in that TIMESCALE (None: none sent)
    residual_ns: Optional[int]       # this ping about the line fit: line noise, not the device's error
    line_delay_ns: Optional[int]     # the ping's round trip on the serial line


# -- the gateway's identity ------------------------------------------------------------------------
def host_id(override: Optional[str] = None) -> str:
    """The gateway's id in every file header: `override`, else $TSQ_HOST_ID, else 16 hex digits of
    HMAC-SHA256 keyed with /etc/machine-id (the machine id itself stays private, as machine-id(5)
    asks), else the host name."""
    if override:
        return override
    return os.environ.get("TSQ_HOST_ID") or _default_host_id()


@functools.lru_cache(maxsize=1)
def _default_host_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, "rb") as f:
                mid = f.read().strip()
        except OSError:
            continue
        if mid:
            return hmac.new(mid, b"tsq field log host id", hashlib.sha256).hexdigest()[:16]
    return socket.gethostname() or "unknown"


# -- writing -------------------------------------------------------------------------------------
class FieldLog:
    """Rows of one stream to `<dir>/<stream>-YYYYMMDD[.N].csv`, through the directory's writer thread.

    Never raises for I/O, at start or later: a directory that cannot be created, a full or
    read-only disk show in `health` and logging resumes by itself (see tsq/fieldlog_writer.py).
    A row with a key that is not a column raises ValueError (a programming error)."""

    def __init__(self, directory: PathLike, stream: str, fields: Optional[Sequence[str]] = None, *,
                 fsync_interval_s: float = 5.0, max_bytes: int = 64 << 20, retention_days: int = 90,
                 host_id: Optional[str] = None, queue_rows: int = DEFAULT_QUEUE_ROWS) -> None:
        if not STREAM_RE.fullmatch(stream):
            raise ValueError(f"bad stream name {stream!r}")
        if fields is None:
            if stream not in STREAM_FIELDS:
                raise ValueError(f"stream {stream!r} has no default columns: pass fields")
            fields = STREAM_FIELDS[stream]
        self.directory = os.fspath(directory)
        self.stream = stream
        self.fields = tuple(fields)
        self._field_set = frozenset(self.fields)
        self.fsync_interval_s = fsync_interval_s
        self.max_bytes = max_bytes
        self.retention_days = retention_days
        self.host_id = _resolve_host(host_id)
        header = header_bytes(stream, self.fields, self.host_id, _hostname())
        self._writer, self._stream = DirectoryWriter.attach(
            self.directory, stream, header, StreamOptions(fsync_interval_s, max_bytes, retention_days),
            queue_rows)
        self._closed = False

    def write(self, row: Mapping[str, object], *, now_unix_ns: Optional[int] = None) -> bool:
        """Queue one row (never blocks). True if queued; False if dropped (queue full, log closed)
        and counted in `health.rows_dropped`. `time_utc` may be unix ns (the model's UTC), an RFC 3339
        string, or None/absent (then `now_unix_ns`, default the system clock, with utc_source
        "system"); the row's UTC day picks the file."""
        values = dict(row)
        unknown = set(values) - self._field_set
        if unknown:
            raise ValueError(f"unknown fields for {self.stream}: {sorted(unknown)}")
        now = time.time_ns() if now_unix_ns is None else now_unix_ns
        row_ns = now
        if "time_utc" in self._field_set:
            t = values.get("time_utc")
            source: Optional[str] = None
            if t is None:
                values["time_utc"], source = utc_iso(now), "system"
            elif isinstance(t, int):
                values["time_utc"], source, row_ns = utc_iso(t), "model", t
            if "utc_source" in self._field_set and values.get("utc_source") is None:
                values["utc_source"] = source
        line = csv_line([fmt_value(values.get(f)) for f in self.fields])
        return self._writer.enqueue(self._stream, line, day_of(row_ns), row_ns)

    def flush(self, fsync: bool = True, timeout_s: float = 10.0) -> bool:
        """Block until every row queued before the call is in the kernel (fsync=False: safe from
        kill -9) or on disk (fsync=True: safe from power loss); True if so. Returns False at once
        while the disk is failing, or after `timeout_s`. Not for the event loop: it waits for I/O."""
        return self._writer.flush(self._stream, fsync, timeout_s)

    @property
    def health(self) -> LogHealth:
        """The directory's health (shared by every stream this process writes there)."""
        return self._writer.health()

    def close(self, timeout_s: float = 10.0) -> None:
        """fsync and close the current file (it stays uncompressed until the next rotation); pending
        compression gets up to `timeout_s`. Rows still queued on a failing disk are dropped."""
        if not self._closed:
            self._closed = True
            self._writer.detach(self._stream, timeout_s)

    def __enter__(self) -> FieldLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_resolve_host = host_id  # FieldLog's parameter of that name hides the function


@functools.lru_cache(maxsize=1)
def _hostname() -> str:
    return socket.gethostname()


atexit.register(DirectoryWriter.flush_all, 2.0)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=DirectoryWriter.forget_all)
