"""Stateless address validation for the server: QUIC Retry tokens (RFC 9000 §8.1.2), sans-IO.

A client's first Initial gets a Retry carrying a token; only an Initial that echoes a valid token
from the address it was sent to can create connection state. So a flood of spoofed-source Initials
costs the server one HMAC and one small Retry each (no amplification: a Retry is 74 B against a
1200 B Initial), and no state at all.

Token = `TOKEN_MAGIC | expiry (u64, ms of the monotonic clock) | len(ODCID) | ODCID | tag`, tag =
HMAC-SHA256(secret, magic | expiry | ODCID | Retry SCID | IP | port), truncated to 16 bytes. The
Retry Source Connection ID is not in the token: the client must send its next Initial to it (it is
that Initial's Destination Connection ID), so the server re-derives it instead of storing it.

- **Bound to IP and port.** Within one handshake a client's port does not change: the Initial that
  echoes the token follows the Retry by one round trip, far inside any NAT's mapping lifetime
  (carrier-grade NATs keep UDP mappings for tens of seconds at least). A NAT that rebinds in that
  window makes the token fail: the client is told at once (INVALID_TOKEN) and its next attempt
  gets a fresh Retry.
- **Lifetime `TOKEN_LIFETIME_S` = 10 s.** A token is used one round trip after it is issued; the
  rest covers retransmitted Initials (a client backs its probe timer off 1, 2, 4 s...) on a
  600 ms satellite link. Longer only widens the window in which a captured Initial can be replayed
  from the same address.
- **Secret per process** (32 random bytes), or given: `tsq server --workers N` makes it once in the
  parent so every worker accepts every worker's tokens (SO_REUSEPORT keeps a client's packets on
  one worker, but not across a change in the number of workers). Restarting the server invalidates
  outstanding tokens, which costs those clients one round trip.
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass
from typing import Any, Optional, Tuple

TOKEN_MAGIC = b"\x54\x01"      # "T", format 1: tokens of other formats are not ours (treated as none)
TOKEN_LIFETIME_S = 10.0
TAG_BYTES = 16
MAX_CID = 20                   # RFC 9000 §17.2: connection IDs are at most 20 bytes
_HEAD = struct.Struct(">2sQB")


@dataclass(frozen=True)
class TokenCheck:
    """The verdict on a token: the original Destination Connection ID when valid, else why not."""

    odcid: Optional[bytes]
    reason: str = ""

    @property
    def valid(self) -> bool:
        return self.odcid is not None


def _address(addr: Tuple[Any, ...]) -> bytes:
    return f"{addr[0]}|{addr[1] if len(addr) > 1 else 0}".encode("ascii", "replace")


class RetryTokens:
    """Issues and checks Retry tokens; `now_s` is any monotonic clock shared by the processes."""

    def __init__(self, secret: Optional[bytes] = None, lifetime_s: float = TOKEN_LIFETIME_S) -> None:
        self._secret = secret if secret else os.urandom(32)
        if len(self._secret) < 16:
            raise ValueError("a Retry token secret needs at least 16 bytes")
        self.lifetime_s = lifetime_s

    def _tag(self, head: bytes, retry_scid: bytes, addr: Tuple[Any, ...]) -> bytes:
        return hmac.digest(self._secret, head + retry_scid + _address(addr), "sha256")[:TAG_BYTES]

    def issue(self, addr: Tuple[Any, ...], odcid: bytes, retry_scid: bytes, now_s: float) -> bytes:
        """The token for a Retry sent to `addr` in answer to an Initial for `odcid`."""
        if len(odcid) > MAX_CID:
            raise ValueError("connection ID longer than 20 bytes")
        expiry_ms = int((now_s + self.lifetime_s) * 1000)
        head = _HEAD.pack(TOKEN_MAGIC, expiry_ms, len(odcid)) + odcid
        return head + self._tag(head, retry_scid, addr)

    @staticmethod
    def is_ours(token: bytes) -> bool:
        """Whether `token` has this format (another server's NEW_TOKEN is simply not ours)."""
        return token[:len(TOKEN_MAGIC)] == TOKEN_MAGIC

    def check(self, token: bytes, addr: Tuple[Any, ...], dcid: bytes, now_s: float) -> TokenCheck:
        """Validate the token of an Initial from `addr` sent to `dcid` (our Retry SCID)."""
        if len(token) < _HEAD.size + TAG_BYTES or not self.is_ours(token):
            return TokenCheck(None, "malformed")
        _, expiry_ms, odcid_len = _HEAD.unpack_from(token)
        end = _HEAD.size + odcid_len
        if odcid_len > MAX_CID or len(token) != end + TAG_BYTES:
            return TokenCheck(None, "malformed")
        if not hmac.compare_digest(token[end:], self._tag(token[:end], dcid, addr)):
            return TokenCheck(None, "forged or another address")
        if now_s * 1000 > expiry_ms:
            return TokenCheck(None, "expired")
        return TokenCheck(bytes(token[_HEAD.size:end]))
