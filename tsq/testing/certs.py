"""The throw-away PKI for tests and benchmarks: the demo's (tsq.demo.pki)."""

from __future__ import annotations

from tsq.demo.pki import DemoPki as TestPki
from tsq.demo.pki import make_pki

__all__ = ["TestPki", "make_pki"]
