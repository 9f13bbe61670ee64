"""The Python stand-in device for tests: the demo's (tsq.demo.standin)."""

from __future__ import annotations

from tsq.demo.standin import StandInDevice

__all__ = ["StandInDevice"]
