"""`tsq report`'s reading: field-log columns into numpy, per gateway (host id) and key, and truth logs.

Chunked: rows are split on commas (the writer never quotes these columns), converted a chunk at a
time and appended to growing stdlib arrays, so a month of logs stays within a few hundred MB.
"""

from __future__ import annotations

import array as _array
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np
import numpy.typing as npt

from tsq.fieldlog_files import (
    TRUTH_RE,
    LogFile,
    ReadStats,
    data_chunks,
    parse_truth_line,
    truth_clock,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_CHUNK = 20_000
TEXT_COLUMNS = frozenset({"state", "utc_source"})  # stored as codes into Vocabulary


def normalise_device(name: str) -> str:
    """'C0FFEE01', '0xc0ffee01', '0x00C0FFEE01' -> '0xc0ffee01' (hex ids); anything else lowercased."""
    s = name.strip().lower()
    digits = s[2:] if s.startswith("0x") else s
    try:
        return f"0x{int(digits, 16):08x}"
    except ValueError:
        return s


class Vocabulary:
    """Text cells (states) as small integer codes, one table per report."""

    def __init__(self) -> None:
        self.codes: Dict[str, int] = {}
        self.names: List[str] = []

    LIMIT = 120  # codes are int8; a damaged log's garbage shares one code beyond this

    def code(self, name: str) -> int:
        c = self.codes.get(name)
        if c is None:
            if len(self.names) >= self.LIMIT:
                name = "(other)"
                if name in self.codes:
                    return self.codes[name]
            c = self.codes[name] = len(self.names)
            self.names.append(name)
        return c

    def codes_of(self, names: Iterable[str]) -> Set[int]:
        return {self.codes[n] for n in names if n in self.codes}


@dataclass
class HostLogs:
    """One gateway's rows of one stream: columns per key (server, device, or '' for the model)."""

    host: str
    hostname: str = ""
    dirs: Set[str] = field(default_factory=set)
    versions: Set[int] = field(default_factory=set)
    groups: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def _typecode(column: str) -> Tuple[str, Any]:
    if column == "time_utc":
        return "q", np.int64
    if column in TEXT_COLUMNS:
        return "b", np.int8
    return "f", np.float32  # ns of offset: 7 digits are plenty; sums accumulate in float64


class _Group:
    """Rows of one series: the wanted cells of each row as one tuple until a chunk is full, then
    converted column by column and appended to growing stdlib arrays (realloc'd in place, ~12 %
    slack; many small numpy arrays would fragment the heap)."""

    def __init__(self, columns: Tuple[str, ...], stats: ReadStats, vocab: Vocabulary) -> None:
        self.columns = columns
        self.stats = stats
        self.vocab = vocab
        self.pending: List[Tuple[str, ...]] = []
        self.buffers = {c: _array.array(_typecode(c)[0]) for c in columns}

    def flush(self) -> None:
        """Convert the pending rows; a row with a cell that does not parse is dropped and counted
        (the chunk is converted whole first, row by row only when that fails)."""
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        try:
            converted = self._convert_rows(rows)
        except ValueError:
            good = [r for r in rows if self._row_parses(r)]
            self.stats.bad_lines += len(rows) - len(good)
            self.stats.rows -= len(rows) - len(good)
            converted = self._convert_rows(good)
        for c, arr in converted.items():
            self.buffers[c].frombytes(arr.tobytes())

    def _convert_rows(self, rows: List[Tuple[str, ...]]) -> Dict[str, Any]:
        cols = list(zip(*rows)) if rows else [() for _ in self.columns]
        return {c: self._convert(c, list(v)) for c, v in zip(self.columns, cols)}

    def _row_parses(self, row: Tuple[str, ...]) -> bool:
        try:
            self._convert_rows([row])
        except ValueError:
            return False
        return True

    def _convert(self, column: str, values: List[str]) -> Any:
        if column == "time_utc":
            return to_ns(values)
        if column in TEXT_COLUMNS:
            uniq, inverse = np.unique(np.array(values, dtype=str), return_inverse=True)
            codes = np.array([self.vocab.code(u) if u else -1 for u in uniq], dtype=np.int8)
            return codes[inverse.reshape(-1)] if len(values) else codes
        return to_float(values).astype(np.float32)

    def arrays(self) -> Dict[str, Any]:
        self.flush()
        return {c: np.frombuffer(self.buffers[c], dtype=_typecode(c)[1]) for c in self.columns}


def read_stream(paths: Iterable[str], stream: str, key: Optional[str], required: Tuple[str, ...],
                optional: Tuple[str, ...], stats: ReadStats, vocab: Vocabulary) -> Dict[str, HostLogs]:
    """The columns `required` + `optional` of every row of `stream`, per host and per value of column
    `key`. A file lacking a required column is a problem (skipped); optional ones read as empty."""
    columns = required + optional
    hosts: Dict[str, HostLogs] = {}
    groups: Dict[Tuple[str, str], _Group] = {}
    names: Dict[int, str] = {}  # group -> series name (one group under each spelling of its key)
    last: Optional[LogFile] = None
    pick: Optional[Callable[[List[str]], Tuple[str, ...]]] = None
    ncols, kidx = 0, -1
    for info, lines in data_chunks(paths, stream, stats):
        if info is not last:
            last = info
            missing = [c for c in required if c not in info.columns]
            if missing or (key and key not in info.columns):
                pick = None
                stats.problems.append(f"{info.path}: lacks the column(s) {', '.join(missing or [str(key)])}")
            else:
                # a column the file lacks reads the empty cell appended to every row (index -1)
                getter = operator.itemgetter(*[info.columns.index(c) if c in info.columns else -1
                                               for c in columns])
                if len(columns) > 1:
                    pick = getter
                else:
                    def pick_one(parts: List[str], g: Callable[[List[str]], str] = getter) -> Tuple[str, ...]:
                        return (g(parts),)
                    pick = pick_one
                ncols = len(info.columns)
                kidx = info.columns.index(key) if key else -1
                h = hosts.get(info.host)
                if h is None:
                    h = hosts[info.host] = HostLogs(info.host)
                h.hostname = h.hostname or info.hostname
                h.dirs.add(str(info.path.parent))
                h.versions.add(info.version)
        if pick is None:
            continue
        bad = 0
        for line in lines:  # the hot loop: a month is ~13 M lines
            parts = line.split(",")
            if len(parts) != ncols:
                bad += 1  # a quoted comma or a damaged line: skipped, counted
                continue
            cell = parts[kidx] if kidx >= 0 else ""
            g = groups.get((info.host, cell))
            if g is None:
                name = normalise_device(cell) if key == "device" else cell
                g = groups.get((info.host, name)) or _Group(columns, stats, vocab)
                groups[(info.host, name)] = groups[(info.host, cell)] = g
                names[id(g)] = name
            parts.append("")
            g.pending.append(pick(parts))
            if len(g.pending) >= _CHUNK:
                g.flush()
        stats.rows += len(lines) - bad
        stats.bad_lines += bad
    for (host, _cell), g in groups.items():
        name = names[id(g)]
        if name not in hosts[host].groups:
            hosts[host].groups[name] = g.arrays()
    return hosts


def to_ns(times: List[str]) -> IntArray:
    """RFC 3339 UTC strings (…Z) -> int64 unix ns, vectorised."""
    arr = np.array([t[:-1] if t.endswith("Z") else t for t in times], dtype="datetime64[ns]")
    return arr.astype(np.int64)


def to_float(values: List[str]) -> FloatArray:
    """Numeric strings -> float64; empty cells become NaN."""
    try:
        return np.array(values, dtype=np.float64)  # no empty cell: numpy parses them all at once
    except ValueError:
        pass
    arr = np.array(values, dtype=object)
    arr[arr == ""] = "nan"
    return arr.astype(np.float64)


# -- truth logs ---------------------------------------------------------------------------------
@dataclass
class Truth:
    """One truth log: the clock's own UTC against CLOCK_REALTIME (simulators only)."""

    clock: str            # 'gateway' or a device id (0x%08x)
    path: Path
    explicit: bool        # named with --truth (else found in a log directory)
    t_ns: IntArray        # CLOCK_REALTIME of the line
    error_ns: FloatArray  # clock's UTC minus realtime (NaN: no UTC yet)
    bound_ns: FloatArray  # the clock's own bound then
    state: Any            # int8: 0 unsynchronised, 1 synchronised, 2 holdover, 3 booting


def truth_paths(logdirs: Iterable[str], explicit: Iterable[str], stats: ReadStats) -> List[Tuple[Path, bool]]:
    """Truth files named with --truth (a file, or a directory of truth-*.log) and those found in
    the log directories; (path, explicit)."""
    out: List[Tuple[Path, bool]] = []
    seen: Set[Path] = set()

    def add(p: Path, is_explicit: bool) -> None:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            out.append((p, is_explicit))

    for name in explicit:
        p = Path(name)
        if p.is_dir():
            try:
                found = sorted(x for x in p.iterdir() if TRUTH_RE.match(x.name))
            except OSError as exc:
                stats.error(f"{p}: cannot list the directory: {exc.strerror or exc}")
                continue
            if not found:
                stats.error(f"{p}: no truth logs (truth-<device id>.log, truth-gateway.log) in it")
            for x in found:
                add(x, True)
        elif not p.exists():
            stats.error(f"{p}: no such truth log")
        elif truth_clock(p) is None:
            stats.error(f"{p}: a truth log is named truth-<device id>.log or truth-gateway.log")
        else:
            add(p, True)
    for d in logdirs:
        p = Path(d)
        if p.is_dir():
            try:
                for x in sorted(p.iterdir()):
                    if TRUTH_RE.match(x.name):
                        add(x, False)
            except OSError:
                pass  # read_stream reports the directory
    return out


def read_truth(path: Path, explicit: bool, stats: ReadStats) -> Optional[Truth]:
    """A truth log; lines that do not parse (the line being written) are skipped and counted."""
    clock = truth_clock(path)
    assert clock is not None
    t: List[int] = []
    err: List[float] = []
    bound: List[float] = []
    state: List[int] = []
    try:
        with open(path, encoding="ascii", errors="replace", newline="\n") as f:
            for line in f:
                parsed = parse_truth_line(line) if line.endswith("\n") else None
                if parsed is None:
                    if line.endswith("\n"):
                        stats.bad_lines += 1
                    else:
                        stats.torn_lines += 1
                    continue
                rt, e, b, s = parsed
                t.append(rt)
                err.append(float("nan") if e is None else float(e))
                bound.append(float("nan") if b is None else float(b))
                state.append(max(-1, min(s, 127)))
    except OSError as exc:
        stats.error(f"{path}: cannot read: {exc.strerror or exc}")
        return None
    return Truth(clock, path, explicit, np.array(t, dtype=np.int64), np.array(err, dtype=np.float64),
                 np.array(bound, dtype=np.float64), np.array(state, dtype=np.int8))
