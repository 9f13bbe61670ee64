"""Interleaved T3 (like NTP's interleaved mode), carried in Metadata pairs, sans-IO.

A client that sends `xleave=1` gets `xleave-tx=NONCEHEX:NTP64HEX`: the kernel TX time of the
previous response on the connection and the nonce of the request it answered. Other clients never
see it (and would ignore the unknown key). The client pairs the precise T3 only with the exchange
whose nonce it names, so a report can never refine the wrong sample.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from tsq.ntp import ntp64_to_unix_ns, unix_ns_to_ntp64

XLEAVE_REQUEST_KEY = "xleave"
XLEAVE_RESPONSE_KEY = "xleave-tx"
_HEX = "0123456789abcdefABCDEF"


def format_xleave(nonce: bytes, tx_unix_ns: int) -> str:
    return f"{nonce.hex()}:{unix_ns_to_ntp64(tx_unix_ns):016x}"


def find_xleave(metadata: Sequence[Tuple[str, str]]) -> Optional[str]:
    """The xleave-tx value of a response's metadata (None when the server sent none)."""
    for key, value in metadata:
        if key == XLEAVE_RESPONSE_KEY:
            return value
    return None


def parse_xleave(value: str, nonce: bytes, pivot_unix_ns: int) -> Optional[int]:
    """The reported TX time (unix ns) if `value` names `nonce`, else None (also when malformed)."""
    prev_nonce, sep, ts = value.partition(":")
    if not sep or prev_nonce.lower() != nonce.hex() or not 1 <= len(ts) <= 16 or ts.strip(_HEX):
        return None
    return ntp64_to_unix_ns(int(ts, 16), pivot_unix_ns)
