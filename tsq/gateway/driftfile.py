"""The drift file (chrony's driftfile): the raw clock's frequency kept across restarts.

The engine decides what is worth saving and whether a saved record is still fresh
(tsq.sync.drift); this is only the file: read at start, replaced atomically (tsq.atomicfile) every
`SAVE_INTERVAL_S` and at exit. A missing file is a cold start, a damaged one is reported and
ignored, and a failing write is a warning: none of them stops the time service.
"""

from __future__ import annotations

from typing import Optional, Tuple

from tsq.atomicfile import write_atomic
from tsq.sync.drift import DriftError, DriftRecord

SAVE_INTERVAL_S = 600.0


def load_drift(path: str) -> Tuple[Optional[DriftRecord], str]:
    """(record or None, what happened, in words)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(4096)
    except FileNotFoundError:
        return None, f"drift file {path}: none yet (cold start)"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"drift file {path}: unreadable ({getattr(exc, 'strerror', None) or exc}): cold start"
    try:
        return DriftRecord.from_json(text), f"drift file {path}"
    except DriftError as exc:
        return None, f"drift file {path}: ignored ({exc}): cold start"


def save_drift(path: str, record: DriftRecord) -> None:
    """Replace the drift file (OSError when it cannot be written)."""
    write_atomic(path, (record.to_json() + "\n").encode("utf-8"), 0o644)
