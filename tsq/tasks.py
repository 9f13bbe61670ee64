"""asyncio helpers shared by the long-running commands."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task, then wait for each to finish; their errors were reported (or are moot)
    by the caller, so shutting down never raises."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
