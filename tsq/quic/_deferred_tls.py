"""Load pyOpenSSL, service_identity and certifi only when aioquic verifies a certificate chain.

`aioquic.tls` imports the three at module level, yet uses them in one function only,
`verify_certificate`, which runs when a client checks a server against CAs (`--ca`, or the system
store). A gateway that trusts by pin, and every server, never calls it, and the three (with the
modules they pull in: importlib.resources, tempfile, shutil, bz2, lzma, attrs) are ~3.5 MB of the
gateway's resident memory: 9 % of the 40 MB a Raspberry Pi gateway is allowed (docs/benchmarks.md,
"Gateway footprint").

`import_aioquic_tls()` imports `aioquic.tls` with a stand-in bound to each of those names; the
stand-in imports the real module at its first attribute access, so a chain check behaves exactly
as before. Nothing is deferred when any of them is already imported.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Dict

DEFERRED = ("OpenSSL.crypto", "service_identity", "certifi")


class _Deferred(types.ModuleType):
    """Stands for module `__name__`; the first attribute read imports the real one."""

    def __getattr__(self, attribute: str) -> Any:
        # Only called for what this object lacks: every attribute of the real module.
        return getattr(importlib.import_module(self.__name__), attribute)


def import_aioquic_tls() -> types.ModuleType:
    """`import aioquic.tls`, binding `crypto` and `service_identity` there to deferred stand-ins."""
    if "aioquic.tls" in sys.modules or any(name.split(".")[0] in sys.modules for name in DEFERRED):
        return importlib.import_module("aioquic.tls")
    stand_ins: Dict[str, types.ModuleType] = {}
    for name in DEFERRED:
        stand_ins[name] = _Deferred(name)
        parent, _, child = name.rpartition(".")
        if parent:   # `from OpenSSL import crypto` reads .crypto of a plain (not deferred) parent
            setattr(stand_ins.setdefault(parent, types.ModuleType(parent)), child, stand_ins[name])
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("aioquic.tls")
    finally:
        # The stand-ins leave sys.modules at once: anything else importing the packages, and the
        # stand-ins' own first use, import the real ones.
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
