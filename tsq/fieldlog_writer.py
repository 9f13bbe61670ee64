"""The field-log writer: one thread per directory, so the caller (the event loop) only enqueues.

`FieldLog.write` formats a row and puts it on the directory's bounded queue; it never blocks and
never raises for I/O: a full queue drops the row and counts it. The directory's thread writes each
row with one write(2) on an O_APPEND descriptor, fsyncs within the smallest `fsync_interval_s` of
its streams (and on rotation and close), rotates daily and by size, and hands closed files to a
compressor (gzip in a child process at idle priority, then retention).

A failing disk degrades the log only. Any OSError (ENOSPC, EIO, EROFS, a directory that vanished or
cannot be created) marks the directory failing (`LogHealth`), keeps the queued rows (the queue's
bound still applies, so rows beyond it are dropped and counted) and retries with exponential
backoff; the first write that succeeds again ends the failure. A short write is truncated back to
the last whole line before anything else happens, so the writer never leaves a partial row.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Deque, Dict, List, Optional, Set, Tuple

from tsq.fieldlog_files import (
    DAY_NS,
    NAME_RE,
    compress,
    day_of,
    file_name,
    fsync_dir,
    os_error_line,
    recover,
)

log = logging.getLogger("tsq.fieldlog")

DEFAULT_QUEUE_ROWS = 4096     # per directory: minutes of rows of a busy gateway while a disk stalls
BATCH_ROWS = 512              # rows taken off the queue at once
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0


@dataclass(frozen=True)
class LogHealth:
    """How one log directory is doing, for status and metrics (`FieldLog.health`).

    `ok` is False from the first failed write, open or fsync until a write succeeds again;
    `error` is the last error as one line (kept after a recovery), `failing_since_unix_ns` the
    system-clock time the current failure began (None while ok). Row counters since the process
    started: accepted onto the queue, written (in the kernel: survive kill -9), synced (fsynced:
    survive a power cut), dropped (refused by a full queue, or still queued at close on a failing
    disk: never written)."""

    directory: str
    ok: bool
    error: Optional[str]
    failing_since_unix_ns: Optional[int]
    rows_accepted: int
    rows_written: int
    rows_synced: int
    rows_dropped: int
    rows_pending: int
    compressor: str
    compression_error: Optional[str]

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StreamOptions:
    fsync_interval_s: float = 5.0
    max_bytes: int = 64 << 20
    retention_days: int = 90


class _Stream:
    """One stream's file state; touched only by the directory's thread (and `detached` under the
    writer's lock)."""

    def __init__(self, name: str, header: bytes, options: StreamOptions) -> None:
        self.name = name
        self.header = header
        self.options = options
        self.fd: Optional[int] = None
        self.path: Optional[Path] = None
        self.day = ""
        self.part = 0
        self.size = 0
        self.last_row_ns = 0
        self.dirty = False
        self.recovered = False
        self.detached = False
        self.last_seq = 0
        self.known: Optional[Tuple[Path, int, int, int]] = None  # (path, dev, ino, size) at our close
        self.truncate_to: Optional[Tuple[Path, int]] = None       # a short write ftruncate could not undo


@dataclass
class _Row:
    stream: _Stream
    line: bytes
    day: str
    row_ns: int
    seq: int


class DirectoryWriter:
    """The thread that owns every file of one directory in this process (see the module doc)."""

    _registry: ClassVar[Dict[str, DirectoryWriter]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def attach(cls, directory: str, name: str, header: bytes, options: StreamOptions,
               queue_rows: int = DEFAULT_QUEUE_ROWS) -> Tuple[DirectoryWriter, _Stream]:
        """The writer of `directory` (started if needed) and a new stream on it. No I/O happens here:
        a directory that does not exist or cannot be created shows in the health, not as an error."""
        key = os.path.abspath(directory)
        with cls._registry_lock:
            w = cls._registry.get(key)
            if w is None:
                w = cls._registry[key] = cls(Path(key))
            st = w._add_stream(name, header, options, queue_rows)
        return w, st

    @classmethod
    def flush_all(cls, timeout_s: float) -> None:
        """fsync what every writer of this process has queued (at interpreter exit)."""
        with cls._registry_lock:
            writers = list(cls._registry.values())
        for w in writers:
            w.flush_all_streams(timeout_s)

    @classmethod
    def forget_all(cls) -> None:
        """After fork(): the threads did not come along; the child starts afresh."""
        cls._registry = {}
        cls._registry_lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cond = threading.Condition()
        self._queue: Deque[_Row] = deque()
        self._queue_rows = 1
        self._streams: Dict[str, _Stream] = {}
        self._detach: List[_Stream] = []
        self._seq = 0            # last row accepted
        self._done_seq = 0       # every row up to here was written (or dropped at close)
        self._synced_seq = 0     # every row up to here was written and fsynced
        self._sync_target = 0    # a flush(fsync=True) waits for this row
        self._sync_due: Optional[float] = None
        self._retry_at = 0.0
        self._backoff = RETRY_INITIAL_S
        self._failing_since: Optional[int] = None
        self._error: Optional[str] = None
        self._accepted = self._written = self._synced = self._refused = self._abandoned = 0
        self._stop = False
        self.short_writes = 0
        # files: the compressor skips each stream's latest file and marks what it is compressing
        self._files_lock = threading.Lock()
        self._latest: Dict[str, Path] = {}
        self._busy: Set[Path] = set()
        self._compressor = _Compressor(self)
        self._thread = threading.Thread(target=self._run, name=f"tsq-fieldlog {directory}", daemon=True)
        self._thread.start()

    # -- the callers' side (any thread) ---------------------------------------------------------
    def _add_stream(self, name: str, header: bytes, options: StreamOptions, queue_rows: int) -> _Stream:
        with self._cond:
            old = self._streams.get(name)
            if old is not None and not old.detached:
                raise ValueError(f"stream {name!r} is already open in {self.directory}")
            st = _Stream(name, header, options)
            self._streams[name] = st
            self._queue_rows = max(self._queue_rows, queue_rows)
            return st

    def enqueue(self, st: _Stream, line: bytes, day: str, row_ns: int) -> bool:
        """Queue one formatted row; False (and counted) if the queue is full or the stream closed."""
        with self._cond:
            if st.detached or self._stop or len(self._queue) >= self._queue_rows:
                self._refused += 1
                return False
            self._seq += 1
            self._accepted += 1
            st.last_seq = self._seq
            self._queue.append(_Row(st, line, day, row_ns, self._seq))
            if len(self._queue) == 1:
                self._cond.notify_all()
            return True

    def flush(self, st: _Stream, fsync: bool, timeout_s: float) -> bool:
        """Wait until every row `st` accepted before the call is written (fsync=False) or on disk
        (fsync=True). False at once while the directory is failing, or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = st.last_seq
            if fsync and target > self._sync_target:
                self._sync_target = target
                self._cond.notify_all()
            while True:
                if (self._synced_seq if fsync else self._done_seq) >= target:
                    return True
                remaining = deadline - time.monotonic()
                if self._failing_since is not None or self._stop or remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def flush_all_streams(self, timeout_s: float) -> None:
        with self._cond:
            streams = list(self._streams.values())
        for st in streams:
            self.flush(st, True, timeout_s)

    def detach(self, st: _Stream, timeout_s: float) -> None:
        """Close `st`: fsync and close its file; rows it still has queued on a failing disk are
        dropped (counted). The last stream to go stops the threads: pending compression gets what is
        left of `timeout_s`, then it is stopped (the plain file stays, compressed at the next start)."""
        deadline = time.monotonic() + timeout_s
        self.flush(st, True, timeout_s)
        # the gzip and retention of this stream's rotations (they skip streams no longer attached)
        self._compressor.wait_idle(max(0.0, deadline - time.monotonic()))
        with self._cond:
            st.detached = True
            self._detach.append(st)
            last = all(s.detached for s in self._streams.values())
            self._cond.notify_all()
            if not last:
                while self._streams.get(st.name) is st and time.monotonic() < deadline:
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                return
        with DirectoryWriter._registry_lock:
            with self._cond:
                if not all(s.detached for s in self._streams.values()):
                    return  # a stream was attached meanwhile: keep running
                self._stop = True  # the thread closes the detached streams' files first
                self._cond.notify_all()
            if DirectoryWriter._registry.get(str(self.directory)) is self:
                del DirectoryWriter._registry[str(self.directory)]
        self._compressor.stop(max(0.0, deadline - time.monotonic()))
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def health(self) -> LogHealth:
        with self._cond:
            return LogHealth(
                directory=str(self.directory), ok=self._failing_since is None, error=self._error,
                failing_since_unix_ns=self._failing_since, rows_accepted=self._accepted,
                rows_written=self._written, rows_synced=self._synced,
                rows_dropped=self._refused + self._abandoned, rows_pending=len(self._queue),
                compressor=self._compressor.priority, compression_error=self._compressor.error)

    # -- the directory's thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    ready = now >= self._retry_at  # after a failure, nothing touches the disk until then
                    writable = ready and bool(self._queue)
                    sync = ready and ((self._sync_due is not None and now >= self._sync_due)
                                      or self._synced_seq < self._sync_target <= self._done_seq)
                    if writable or sync or self._detach or self._stop:
                        break
                    if not ready and (self._queue or self._sync_due is not None):
                        timeout: Optional[float] = self._retry_at - now
                    else:
                        timeout = None if self._sync_due is None else self._sync_due - now
                    self._cond.wait(timeout)
                if self._stop and not self._detach:
                    break
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH_ROWS))] \
                    if writable else []
                detach, self._detach = self._detach, []
            try:
                self._work(batch, detach, sync)
            except Exception as exc:  # a bug must not end logging quietly: report it, retry later
                log.exception("field log %s: unexpected error", self.directory)
                with self._cond:
                    self._fail_locked(f"{type(exc).__name__}: {exc}".replace("\n", " "))
                    self._cond.notify_all()
        self._close_all()

    def _work(self, batch: List[_Row], detach: List[_Stream], sync: bool) -> None:
        written, error = self._write_batch(batch) if batch else (0, None)
        with self._cond:
            self._written += written
            self._done_seq = self._queue[0].seq - 1 if self._queue else self._seq
            if written and self._sync_due is None:
                interval = min((s.options.fsync_interval_s for s in self._streams.values()), default=5.0)
                self._sync_due = time.monotonic() + interval
            due = self._sync_due is not None and time.monotonic() >= self._sync_due
        if error is not None or sync or due or detach:
            # on an error every file is closed too: reopened (and re-checked) at the next attempt
            sync_error = self._sync_all(detach)
            error = error or sync_error
        with self._cond:
            for st in detach:
                before = len(self._queue)
                self._queue = deque(r for r in self._queue if r.stream is not st)
                self._abandoned += before - len(self._queue)
                if self._streams.get(st.name) is st:
                    del self._streams[st.name]
            self._done_seq = self._queue[0].seq - 1 if self._queue else self._seq
            if error is not None:
                self._fail_locked(error)
            elif written:
                self._recovered_locked()
            self._cond.notify_all()

    def _write_batch(self, batch: List[_Row]) -> Tuple[int, Optional[str]]:
        """Write rows in order; on an error the rest go back to the front of the queue."""
        written = skipped = done = 0
        try:
            self._check_files()
            for row in batch:
                if row.stream.detached:
                    skipped += 1  # closed with rows left: dropped, counted
                else:
                    self._write_row(row)
                    written += 1
                done += 1
        except OSError as exc:
            with self._cond:
                self._queue.extendleft(reversed(batch[done:]))
                self._abandoned += skipped
            return written, os_error_line(exc, "writing")
        with self._cond:
            self._abandoned += skipped
        return written, None

    def _fail_locked(self, line: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.time_ns()
            log.warning("field log %s: %s; rows are kept (up to %d queued) and writing is retried",
                        self.directory, line, self._queue_rows)
        self._error = line
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, RETRY_MAX_S)

    def _recovered_locked(self) -> None:
        if self._failing_since is not None:
            log.warning("field log %s: writing again (failing for %.0f s)", self.directory,
                        (time.time_ns() - self._failing_since) / 1e9)
        self._failing_since = None
        self._backoff = RETRY_INITIAL_S

    def _check_files(self) -> None:
        """A file removed under us (its directory deleted, a careless logrotate) would swallow rows:
        stat the path and reopen when it is no longer the file we hold."""
        for st in list(self._streams.values()):
            if st.fd is None or st.path is None:
                continue
            try:
                on_disk = os.stat(st.path)
            except FileNotFoundError:
                on_disk = None
            held = os.fstat(st.fd)
            if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
                log.warning("field log %s: %s vanished; starting a new file", self.directory, st.path)
                os.close(st.fd)
                st.fd, st.known = None, None

    def _write_row(self, row: _Row) -> None:
        st = row.stream
        day = max(row.day, st.day)  # a model stepping back over midnight never reopens yesterday
        if st.fd is not None and (day != st.day or (st.size + len(row.line) > st.options.max_bytes
                                                     and st.size > len(st.header))):
            self._close_stream(st, sync=True)  # rotation
        if st.fd is None:
            self._open(st, day, len(row.line))
        assert st.fd is not None and st.path is not None
        self._append(st, st.fd, st.path, st.size, row.line)
        st.size += len(row.line)
        st.dirty = True
        st.last_row_ns = max(st.last_row_ns, row.row_ns)

    def _append(self, st: _Stream, fd: int, path: Path, before: int, data: bytes) -> None:
        """One write(2); a short or failed write is truncated back to `before` (the last whole line)."""
        try:
            n = os.write(fd, data)
        except OSError as exc:
            exc.filename = exc.filename or str(path)
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size > before:
                    self._undo(st, fd, path, before)
            raise
        if n != len(data):
            self.short_writes += 1
            self._undo(st, fd, path, before)
            raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes; truncated back to the "
                          "last whole line)", str(path))

    def _undo(self, st: _Stream, fd: int, path: Path, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:
            st.truncate_to = (path, size)  # done when the file is next opened, before any write

    def _open(self, st: _Stream, day: str, incoming: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not st.recovered:
            with contextlib.suppress(OSError):
                recover(self.directory, st.name)
            st.recovered = True
        if day != st.day:
            # Never back to an earlier part with room left: rows of one day stay in file order
            # across restarts (a reader reads the parts in number order).
            st.day, st.part = day, self._last_part(st.name, day)
        with self._files_lock:
            part = st.part
            while True:
                path = self.directory / file_name(st.name, day, part)
                if path not in self._busy and not path.with_name(path.name + ".gz").exists() \
                        and self._usable(st, path, incoming):
                    break
                part += 1
            new_file = self._latest.get(st.name) != path
            st.part = part
            self._latest[st.name] = path
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        try:
            info = os.fstat(fd)
            size = info.st_size
            if st.truncate_to is not None and st.truncate_to[0] == path and size > st.truncate_to[1]:
                os.ftruncate(fd, st.truncate_to[1])
                size = st.truncate_to[1]
            st.truncate_to = None
            if size == 0:
                self._append(st, fd, path, 0, st.header)
                os.fsync(fd)
                fsync_dir(self.directory)
                size = len(st.header)
            elif st.known != (path, info.st_dev, info.st_ino, size):
                size += _end_torn_line(fd, path)
        except BaseException:
            os.close(fd)
            raise
        st.fd, st.path, st.size = fd, path, size
        if new_file:
            self._compressor.request()

    def _last_part(self, stream: str, day: str) -> int:
        parts = [int(m["part"] or 0) for p in self.directory.glob(f"{stream}-{day}*.csv*")
                 if (m := NAME_RE.match(p.name)) is not None and m["stream"] == stream and m["day"] == day]
        return max(parts, default=0)

    @staticmethod
    def _usable(st: _Stream, path: Path, incoming: int) -> bool:
        """Can rows of `st` go on at the end of `path`? Absent or empty, or a regular file with our
        exact header (same version, host, columns) and room for the row."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return True
        if not stat.S_ISREG(info.st_mode):
            return False
        if info.st_size == 0:
            return True
        if info.st_size + incoming > st.options.max_bytes:
            return False
        if st.known is not None and st.known[0] == path:
            return True
        with open(path, "rb") as f:
            return f.read(len(st.header)) == st.header

    def _sync_all(self, detached: List[_Stream]) -> Optional[str]:
        """fsync every dirty file and close it (nothing is held open between intervals: a remount or
        a removed directory is then met at the next open). Returns an error line, or None."""
        with self._cond:
            upto, rows = self._done_seq, self._written
        error = None
        for st in list(self._streams.values()) + [d for d in detached if self._streams.get(d.name) is not d]:
            try:
                self._close_stream(st, sync=True)
            except OSError as exc:
                error = os_error_line(exc, "fsyncing") + "; rows since the previous fsync may be lost"
        with self._cond:
            self._sync_due = None
            if error is None:
                self._synced_seq = max(self._synced_seq, upto)
                self._synced = max(self._synced, rows)
        return error

    def _close_stream(self, st: _Stream, sync: bool) -> None:
        if st.fd is None:
            return
        fd, st.fd = st.fd, None
        try:
            if sync and st.dirty:
                os.fsync(fd)
                st.dirty = False
            info = os.fstat(fd)
            if st.path is not None:
                st.known = (st.path, info.st_dev, info.st_ino, info.st_size)
        finally:
            os.close(fd)

    def _close_all(self, sync: bool = True) -> None:
        for st in list(self._streams.values()):
            with contextlib.suppress(OSError):
                self._close_stream(st, sync)

    # -- the compressor's side --------------------------------------------------------------------
    def maintain(self, should_stop: Any) -> None:
        """Compress closed files of this writer's streams and delete those past retention (runs in
        the compressor thread; each stream's latest file is left alone)."""
        with self._cond:
            streams = dict(self._streams)
        if not streams:
            return
        try:
            paths = sorted(self.directory.iterdir())
        except OSError:
            return
        for path in paths:
            if should_stop():
                return
            m = NAME_RE.match(path.name)
            st = streams.get(m["stream"]) if m else None
            if m is None or st is None:
                continue
            with self._files_lock:
                if self._latest.get(st.name) == path:
                    continue
                keep = st.options.retention_days
                if keep > 0 and st.last_row_ns and m["day"] < day_of(st.last_row_ns - keep * DAY_NS):
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                if m["gz"]:
                    continue
                self._busy.add(path)
            try:
                self._compressor.error = self._compressor.compress(path, should_stop)
            finally:
                with self._files_lock:
                    self._busy.discard(path)


def _end_torn_line(fd: int, path: Path) -> int:
    """A file a power cut left ending mid-line (or in NULs) gets a newline, so new rows start on a
    line of their own; the torn line stays as evidence (readers count it as malformed)."""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
    if os.write(fd, b"\n") != 1:
        raise OSError(errno.ENOSPC, "short write ending a torn line", str(path))
    return 1


class _Compressor:
    """Runs `DirectoryWriter.maintain` in a thread of its own when a file was closed; the gzip itself
    runs in a child process that lowers its own priority (SCHED_IDLE, which also puts its I/O in the
    idle class; else nice 19). Not in this process at idle priority: a thread descheduled at idle
    priority while it holds the GIL stalls the event loop (measured: 1.8 s on a loaded machine,
    benchmarks/fieldlog.py). This thread only waits for the child. `priority` says what the child
    applied; without a Python executable to run, the gzip runs here at normal priority."""

    def __init__(self, writer: DirectoryWriter) -> None:
        self._writer = writer
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.priority = ""
        self.error: Optional[str] = None
        self._proc: Optional[subprocess.Popen[str]] = None

    def request(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"tsq-fieldlog-gzip {self._writer.directory}")
            self._thread.start()

    def wait_idle(self, timeout_s: float) -> bool:
        return self._idle.wait(timeout_s)

    def stop(self, timeout_s: float) -> None:
        """Let pending work finish within `timeout_s`, then abort it (the plain file stays)."""
        if self._thread is None:
            return
        self._idle.wait(timeout_s)
        self._stopping = True
        self._wake.set()
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()  # at once; the thread removes its temp file
        self._thread.join(max(2.0, timeout_s))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            try:
                self._writer.maintain(lambda: self._stopping)
            except Exception:
                log.exception("field log %s: compression failed", self._writer.directory)
            if not self._wake.is_set():
                self._idle.set()
        self._idle.set()

    def compress(self, path: Path, should_stop: Callable[[], bool]) -> Optional[str]:
        """gzip `path` (tsq.fieldlog_files.compress) in a low-priority child; an error line or None."""
        if not sys.executable:
            return self._compress_here(path, should_stop)
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-c", _CHILD, _PACKAGE_PARENT, str(path)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        except OSError as exc:
            return os_error_line(exc, "starting the compressor")
        self._proc = proc
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if should_stop():
                        proc.kill()
        finally:
            self._proc = None
        if should_stop() and proc.returncode != 0:  # stopped: what it left is its temp file
            path.with_name(path.name + ".gz.tmp").unlink(missing_ok=True)
            return None
        if not out.strip():  # the child never got going (the package cannot be imported by path?)
            log.warning("field log %s: the compressor process failed (%s); compressing in this process",
                        self._writer.directory, (err.strip().splitlines() or ["no output"])[-1])
            return self._compress_here(path, should_stop)
        self.priority = f"child process, {out.strip()}"
        if proc.returncode != 0:
            return (err.strip().splitlines() or [f"compressor exited with {proc.returncode}"])[-1]
        return None

    def _compress_here(self, path: Path, should_stop: Callable[[], bool]) -> Optional[str]:
        self.priority = "in this process, normal priority"  # never idle here: see the class doc
        try:
            compress(path, should_stop)
        except OSError as exc:
            return os_error_line(exc, "compressing")
        return None


_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
_CHILD = (  # -I: no environment, no user site; the package is found where this one was loaded from
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from tsq.fieldlog_files import compress_main\n"
    "sys.exit(compress_main(sys.argv[2]))\n"
)
