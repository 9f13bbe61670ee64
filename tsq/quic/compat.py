"""Every use of aioquic internals, in one place, each with a capability flag and a fallback.

aioquic's public API has no hook for the three things TSQ needs beyond it: the plaintext of a 1-RTT
packet right before encryption (the late T3 on the server, and which datagram carried the request on
the client), the peer's certificate after the handshake (SPKI pins), and the peer's
max_datagram_frame_size transport parameter (whether DATAGRAM frames may be sent). The server's
packet-header parser is public (`aioquic.quic.packet`) but needs aioquic's private `Buffer`.

Each accessor returns None / False when the attribute is not where this version keeps it: the
capability is then off (stamps fall back to before the packet is built, a pin cannot be checked and
the connection is refused, datagrams are not used), and nothing breaks. The version is checked once
at import against the range this project is tested with (`TESTED_AIOQUIC` and pyproject.toml).
`capabilities()` is what `tsq status` and the server's start line report. One canary test per hook
lives in tests/quic/test_compat.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import aioquic
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicHeader, pull_quic_header

_Buffer: Any
try:
    from aioquic._buffer import Buffer as _Buffer
except ImportError:  # pragma: no cover - an aioquic without it cannot parse headers: no server
    _Buffer = None

log = logging.getLogger("tsq.quic")

TESTED_AIOQUIC = ((1, 2), (1, 8))   # [lowest, first untested) major.minor, as in pyproject.toml

Encrypt = Callable[[bytes, bytes, int], bytes]


def _version(text: str) -> Tuple[int, int]:
    parts = [*text.split("."), "0", "0"][:2]
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)


AIOQUIC_VERSION = str(getattr(aioquic, "__version__", "0"))
VERSION_TESTED = TESTED_AIOQUIC[0] <= _version(AIOQUIC_VERSION) < TESTED_AIOQUIC[1]
if not VERSION_TESTED:
    log.warning("aioquic %s is outside the tested range %d.%d-%d.%d: TSQ's precision hooks may be "
                "off (see `tsq status`)", AIOQUIC_VERSION, *TESTED_AIOQUIC[0], *TESTED_AIOQUIC[1])


# ---------------------------------------------------------------------------------------- hooks
def one_rtt_crypto(quic: QuicConnection) -> Any:
    """The 1-RTT CryptoPair (has `encrypt_packet`), or None before keys exist / if not found."""
    cryptos = getattr(quic, "_cryptos", None)
    pair = cryptos.get(tls.Epoch.ONE_RTT) if isinstance(cryptos, dict) else None
    if pair is None or not callable(getattr(pair, "encrypt_packet", None)):
        return None
    return pair


def peer_certificate(quic: QuicConnection) -> Any:
    """The peer's leaf certificate (cryptography x509) after the handshake, or None."""
    context = getattr(quic, "tls", None)
    return getattr(context, "_peer_certificate", None)


def peer_allows_datagrams(quic: QuicConnection) -> bool:
    """Whether the peer's transport parameters enabled RFC 9221 DATAGRAM frames."""
    return bool(getattr(quic, "_remote_max_datagram_frame_size", None))


def parse_header(data: bytes, host_cid_length: int) -> Optional[QuicHeader]:
    """The QUIC header of a datagram's first packet, or None when it does not parse."""
    if _Buffer is None:  # pragma: no cover
        return None
    try:
        return pull_quic_header(_Buffer(data=data), host_cid_length=host_cid_length)
    except ValueError:
        return None


@dataclass(frozen=True)
class Capabilities:
    """What this aioquic lets TSQ do; all True on a tested version."""

    aioquic: str
    version_tested: bool
    late_t3: bool          # T3 written into the packet right before encryption
    packet_match: bool     # which datagram carried a message (the client's kernel T1)
    spki_pin: bool         # the peer certificate is readable (pins can be checked)
    datagram_params: bool  # the peer's max_datagram_frame_size is readable

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def capabilities() -> Capabilities:
    """Probe the hooks on a throw-away client connection (no packets leave)."""
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["tsq"]))
    crypto_ok = isinstance(getattr(quic, "_cryptos", None), dict)
    return Capabilities(
        aioquic=AIOQUIC_VERSION, version_tested=VERSION_TESTED, late_t3=crypto_ok, packet_match=crypto_ok,
        spki_pin=hasattr(tls.Context, "_peer_certificate") or _instance_has_peer_cert(),
        datagram_params=hasattr(quic, "_remote_max_datagram_frame_size"))


def _instance_has_peer_cert() -> bool:
    ctx = tls.Context(is_client=True)
    return hasattr(ctx, "_peer_certificate")
