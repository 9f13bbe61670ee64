"""Fixtures for the clock tests: each test runs against both backends, imported explicitly."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

import tsq._pyclock


def _fastclock() -> ModuleType:
    try:
        return importlib.import_module("tsq._fastclock")
    except ImportError as exc:
        if os.environ.get("TSQ_REQUIRE_FASTCLOCK") == "1":
            pytest.fail(f"TSQ_REQUIRE_FASTCLOCK=1 but tsq._fastclock does not import: {exc}")
        pytest.skip(
            f"tsq._fastclock is not built ({exc}); build it with `python3 setup.py build_ext --inplace`"
        )


@pytest.fixture(scope="module", params=["python", "cython"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """The pure-Python backend, then the Cython one (skipped with a reason if not built)."""
    if request.param == "python":
        return tsq._pyclock
    return _fastclock()


@pytest.fixture(scope="module")
def fast() -> ModuleType:
    """The Cython backend alone (for comparisons with tsq._pyclock)."""
    return _fastclock()
