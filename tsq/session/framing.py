"""When a TSQ message on a QUIC stream is complete (sans-IO).

Draft-01 defines no end-of-message marker on a stream. This project's rule (docs/wire.md, "Stream
framing"): a message is complete as soon as its bytes parse as whole TLVs carrying what the message
must carry, checked at the end of each received packet; the stream's FIN is optional both ways. The
implementation deployed in the wild never sends FIN after its request, and holds its response
stream open for seconds before FIN, so waiting for FIN either never answers or turns a late FIN into
T4.

- A **request** is complete when it parses as a request (Nonce first).
- A **response** is complete when it parses and holds what the request asked for: an Error TLV (plus
  the Signature Block when one was required), or Nonce, Receive and Send Timestamp; plus, when the
  request asked for Precision Mode, as many bytes as the request had (or its Padding, or a Signature
  Block: it is then whole); plus the Signature Block when the client requires one. Metadata is not
  waited for: a server MAY omit it (§6.3.2), so no rule could tell "not yet" from "never".
- FIN completes whatever has arrived (then a parse error is an error, not "not yet").
- Beyond `MAX_REQUEST_BYTES` / `MAX_RESPONSE_BYTES` a stream is abuse, not a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsq import wire

MAX_REQUEST_BYTES = 4096   # a request is a few hundred bytes (Precision Mode pads to the response)
# A response is at most Nonce, T2, T3, ack, Clock Quality, Time Source Info, a few Metadata TLVs,
# padding to the request and one Signature Block: 257-byte TLVs, a dozen of them at the very most.
MAX_RESPONSE_BYTES = 8192


@dataclass(frozen=True)
class Expectation:
    """What the client's request asked for, which decides when its response is complete."""

    request_size: int = 0
    precision: bool = False
    signature: bool = False


def request_complete(data: bytes) -> bool:
    """True when `data` (all bytes of a stream so far) is a whole request."""
    try:
        wire.decode_request(data)
    except wire.WireError:
        return False
    return True


def response_complete(data: bytes, expect: Expectation) -> bool:
    """True when `data` (all bytes of a response stream so far) holds everything `expect` needs."""
    try:
        resp = wire.decode_response(data)
    except wire.WireError:
        return False
    if isinstance(resp, wire.ErrorResponse):
        return resp.signature is not None or not expect.signature
    if expect.signature and resp.signature is None:
        return False
    if expect.precision:
        # A Precision Mode response is padded to the request's length (§6.4) or, when that is
        # impossible, longer. Bytes that parse but are shorter may be a response cut after T3 (the
        # ack and padding still to come) or one from a server that declined the mode: only its FIN
        # can tell, so wait for it — which costs time, never accuracy (T4 stays the packet of the
        # last byte).
        return len(data) >= expect.request_size or resp.padding > 0 or resp.signature is not None
    return True
