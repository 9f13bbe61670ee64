"""Bridge test helpers: run a function as an unprivileged user (the suite may run as root, which
permissions do not stop)."""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable, TypeVar

import pytest

T = TypeVar("T")
NOBODY = 65534


def _as_nobody(fn: Callable[[], T]) -> T:
    """`fn()` as uid/gid nobody in a forked child (as root), or here when already unprivileged.

    The child returns its result, or the exception it raised, pickled through a pipe."""
    if os.geteuid() != 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                out: Any = ("ok", fn())
            except BaseException as exc:
                out = ("raised", exc)
            os.write(w, pickle.dumps(out))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        pytest.fail(f"child as nobody failed (wait status {status})")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "raised":
        raise value
    result: T = value
    return result


@pytest.fixture
def as_nobody() -> Callable[[Callable[[], T]], T]:
    return _as_nobody
