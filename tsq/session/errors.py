"""What can go wrong with a TSQ exchange or connection (raised by the client edge, made by sessions)."""

from __future__ import annotations


class TsqError(Exception):
    """Any failure of a TSQ exchange or connection; the message says what happened."""


class TsqUnreachable(TsqError):
    """No QUIC connection: the server refused (ICMP), closed the connection, or is not there."""


class TsqHandshakeError(TsqError):
    """The handshake failed: certificate, pin, or ALPN."""


class TsqTimeout(TsqError):
    """No (valid) answer in time."""


class TsqInvalidResponse(TsqError):
    """A response came back but failed the draft §6.6 / signature checks."""


class TsqServerError(TsqInvalidResponse):
    """The server answered with an Error TLV."""

    def __init__(self, code: int, reason: str, server: str = "") -> None:
        prefix = f"{server}: " if server else ""
        super().__init__(f"{prefix}server error {code}: {reason or '(no reason)'}")
        self.code = code
        self.reason = reason


class TsqModeUnavailable(TsqError):
    """Datagram mode was asked for but the server did not enable DATAGRAM frames."""
