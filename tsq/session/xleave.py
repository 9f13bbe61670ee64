"""Interleaved T3 (like NTP's interleaved mode), carried in Metadata pairs, sans-IO.

A client that sends `xleave=1` gets `xleave-tx=NONCEHEX:NTP64HEX`: the kernel TX time of the
previous response on the connection and the nonce of the request it answered. Other clients never
see it (and would ignore the unknown key). The client pairs the precise T3 only with the exchange
whose nonce it names, so a report can never refine the wrong sample.

The nonce is named by its first `NONCE_PREFIX_BYTES` (8 hex digits): the client compares it with
one nonce only (its previous exchange's, 128 random bits), so 32 bits leave a wrong pairing at
2^-32 per report, and the 24 hex digits saved come off every response and, through Precision
Mode's equal lengths, every request. A client accepts 8 to 32 digits (servers before this sent 32).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from tsq.ntp import ntp64_to_unix_ns, unix_ns_to_ntp64

XLEAVE_REQUEST_KEY = "xleave"
XLEAVE_RESPONSE_KEY = "xleave-tx"
NONCE_PREFIX_BYTES = 4
_HEX = "0123456789abcdefABCDEF"


def format_xleave(nonce: bytes, tx_unix_ns: int) -> str:
    return f"{nonce[:NONCE_PREFIX_BYTES].hex()}:{unix_ns_to_ntp64(tx_unix_ns):016x}"


def find_xleave(metadata: Sequence[Tuple[str, str]]) -> Optional[str]:
    """The xleave-tx value of a response's metadata (None when the server sent none)."""
    for key, value in metadata:
        if key == XLEAVE_RESPONSE_KEY:
            return value
    return None


def parse_xleave(value: str, nonce: bytes, pivot_unix_ns: int) -> Optional[int]:
    """The reported TX time (unix ns) if `value` names `nonce`, else None (also when malformed)."""
    named, sep, ts = value.partition(":")
    ours = nonce.hex()
    if (not sep or not 2 * NONCE_PREFIX_BYTES <= len(named) <= len(ours) or named.strip(_HEX)
            or not ours.startswith(named.lower()) or not 1 <= len(ts) <= 16 or ts.strip(_HEX)):
        return None
    return ntp64_to_unix_ns(int(ts, 16), pivot_unix_ns)
