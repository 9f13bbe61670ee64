"""`tsq demo` (and `python -m tsq.bridge` with no port): the whole chain on one machine, live.

Its parts are its own, so the product never imports the test helpers: a throw-away PKI (`pki`),
the firmware's host build found in the checkout or in the installed package's data (`firmware`),
and a Python stand-in device for machines without a C compiler (`standin`).
"""

from __future__ import annotations

from tsq.demo.app import add_parser, default_args, run

__all__ = ["add_parser", "default_args", "run"]
