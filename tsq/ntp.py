"""NTP 64-bit timestamp arithmetic (RFC 5905), pure and sans-IO: unix ns <-> ntp64 with eras.

`tsq.clock` re-exports these (the Cython backend has its own, faster copies, tested against these).
"""

from __future__ import annotations

NTP_UNIX_OFFSET_S = 2208988800
_NS = 1_000_000_000
_NTP_UNIX_OFFSET_NS = NTP_UNIX_OFFSET_S * _NS
_TWO64 = 1 << 64
_TWO63 = 1 << 63


def unix_ns_to_ntp64(unix_ns: int) -> int:
    """unix ns -> ntp64, rounded half-up to the nearest 2**-32 s, wrapped modulo 2**64 (NTP eras)."""
    ntp_ns = unix_ns + _NTP_UNIX_OFFSET_NS
    return (((ntp_ns << 32) + 500_000_000) // _NS) % _TWO64


def ntp64_to_unix_ns(ntp64: int, pivot_unix_ns: int) -> int:
    """ntp64 -> unix ns in the era that puts it nearest the pivot (RFC 5905 era handling).

    The result lies in [pivot - 2**63, pivot + 2**63) units of 2**-32 s, i.e. within about 68 years of
    the pivot; exactly half-way picks the earlier era. Rounds half-up to the nearest ns.
    """
    if not 0 <= ntp64 < _TWO64:
        raise ValueError(f"ntp64 value out of range [0, 2**64): {ntp64}")
    pivot = (((pivot_unix_ns + _NTP_UNIX_OFFSET_NS) << 32) + 500_000_000) // _NS
    delta = ((ntp64 - pivot + _TWO63) % _TWO64) - _TWO63
    unwrapped = pivot + delta
    return ((unwrapped * _NS + (1 << 31)) >> 32) - _NTP_UNIX_OFFSET_NS
