"""The TSQ TLV codec (draft-mccollum-ntp-tsq-01 §6.3), sans-IO.

Messages are sequences of TLVs: a 1-byte type, a 1-byte length, then `length` value bytes.
Decoders are total: they return a typed message or raise `WireError` (a `ValueError`) whose message
says what is wrong and where. Choices the draft leaves open are recorded in `docs/wire.md`.

Timestamps are carried as raw NTP 64-bit values (`int` in `[0, 2**64)`); converting to and from
unix ns, including the era choice, is `tsq.clock`'s job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union

__all__ = [
    "CLOCK_QUALITY",
    "ERROR",
    "ERR_AUTH_REQUIRED",
    "ERR_MALFORMED",
    "ERR_UNSUPPORTED_TLV",
    "MAX_REASON_BYTES",
    "METADATA",
    "METADATA_QUERY",
    "NONCE",
    "NONCE_SIZE",
    "PADDING",
    "PRECISION",
    "PRECISION_REQUEST_SIZE",
    "RECEIVE_TS",
    "SEND_TS",
    "SEND_TS_OFFSET",
    "SIGNATURE",
    "SIGNATURE_REQUEST",
    "TIME_SOURCE",
    "ClockQuality",
    "ErrorResponse",
    "Request",
    "Response",
    "ResponseBuilder",
    "SignatureBlock",
    "Signer",
    "TimeSourceInfo",
    "Tlv",
    "WireError",
    "decode_request",
    "decode_response",
    "encode_error",
    "encode_request",
    "encode_response",
    "pad_request",
    "padding_tlvs",
    "signature_tlv",
]

# TLV types (draft §6.3.1, Table 1).
NONCE = 1
RECEIVE_TS = 2
SEND_TS = 3
METADATA_QUERY = 247
CLOCK_QUALITY = 248
ERROR = 249
PRECISION = 250
TIME_SOURCE = 251
SIGNATURE_REQUEST = 252
METADATA = 253
PADDING = 254
SIGNATURE = 255

TLV_NAMES: Dict[int, str] = {
    NONCE: "Nonce",
    RECEIVE_TS: "Receive Timestamp",
    SEND_TS: "Send Timestamp",
    METADATA_QUERY: "Metadata Query",
    CLOCK_QUALITY: "Clock Quality",
    ERROR: "Error",
    PRECISION: "Precision Mode",
    TIME_SOURCE: "Time Source Info",
    SIGNATURE_REQUEST: "Signature Request",
    METADATA: "Metadata",
    PADDING: "Padding",
    SIGNATURE: "Signature Block",
}

# Error codes named by the draft (§6.3.2, Error TLV).
ERR_MALFORMED = 1
ERR_UNSUPPORTED_TLV = 2
ERR_AUTH_REQUIRED = 3

NONCE_SIZE = 16
TLV_HEADER_SIZE = 2
MAX_VALUE_SIZE = 255
MAX_TLV_SIZE = TLV_HEADER_SIZE + MAX_VALUE_SIZE
# The Error value is code + reserved + reason, and must fit the 1-byte TLV length.
MAX_REASON_BYTES = MAX_VALUE_SIZE - 2
SIGNATURE_FIXED_SIZE = 7  # algorithm (1) + key id (4) + signature length (2)
MAX_SIGNATURE_BYTES = MAX_VALUE_SIZE - SIGNATURE_FIXED_SIZE

# A response always starts Nonce(18) + T2(10) + T3(10): T3's 8 value bytes sit at this offset.
SEND_TS_OFFSET = (TLV_HEADER_SIZE + NONCE_SIZE) + (TLV_HEADER_SIZE + 8) + TLV_HEADER_SIZE

# Precision Mode request size. A response with Nonce, T2, T3 and the ack is 40 bytes; typical
# optional TLVs add Clock Quality (~16), Time Source Info (~30), a few Metadata pairs (~50) and an
# Ed25519 Signature Block (73): about 210 bytes. 256 leaves headroom and still fits any QUIC
# datagram. See docs/wire.md.
PRECISION_REQUEST_SIZE = 256

_REQUEST_ONLY = frozenset({METADATA_QUERY, SIGNATURE_REQUEST})
_RESPONSE_ONLY = frozenset({RECEIVE_TS, SEND_TS, CLOCK_QUALITY, ERROR, TIME_SOURCE, SIGNATURE})

Metadata = Tuple[Tuple[str, str], ...]


class WireError(ValueError):
    """A TSQ message is malformed, or a value cannot be encoded; the message says why."""


class Signer(Protocol):
    """Produces Signature Blocks: fixed algorithm, key id and signature length (tsq.auth has them)."""

    algorithm: int
    key_id: int
    signature_length: int

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Tlv:
    """A TLV of a type this codec does not know (kept in wire order, otherwise ignored)."""

    type: int
    value: bytes


@dataclass(frozen=True)
class ClockQuality:
    """Clock Quality Info (type 248): class, ± error in µs, drift in ppb, optional tag."""

    clock_class: int
    error_us: int
    drift_ppb: int
    tag: str = ""


@dataclass(frozen=True)
class TimeSourceInfo:
    """Time Source Info (type 251): stratum, source type, optional UTF-8 info."""

    stratum: int
    source_type: int
    info: str = ""


@dataclass(frozen=True)
class SignatureBlock:
    """Signature Block (type 255, draft §8)."""

    algorithm: int
    key_id: int
    signature: bytes


@dataclass(frozen=True)
class Request:
    """A TSQ Request. `padding` is the total wire size of the Padding TLVs, headers included."""

    nonce: bytes
    precision: bool = False
    signature_request: bool = False
    metadata_query: bool = False
    metadata: Metadata = ()
    unknown: Tuple[Tlv, ...] = ()
    padding: int = 0


@dataclass(frozen=True)
class Response:
    """A TSQ Response. Timestamps are ntp64; `signed_data` is the exact bytes the signature covers."""

    nonce: bytes
    receive_ts: int
    send_ts: int
    precision: bool = False
    clock_quality: Optional[ClockQuality] = None
    time_source: Optional[TimeSourceInfo] = None
    metadata: Metadata = ()
    unknown: Tuple[Tlv, ...] = ()
    padding: int = 0
    signature: Optional[SignatureBlock] = None
    # Derived from the wire bytes on decode, so not part of equality.
    signed_data: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True)
class ErrorResponse:
    """A response that is an Error TLV alone, optionally signed."""

    code: int
    reason: str = ""
    signature: Optional[SignatureBlock] = None
    signed_data: bytes = field(default=b"", compare=False, repr=False)


# ---------------------------------------------------------------------------------------------
# Encoding


def _name(tlv_type: int) -> str:
    return f"{TLV_NAMES.get(tlv_type, 'TLV')} (type {tlv_type})"


def _tlv(tlv_type: int, value: bytes) -> bytes:
    if len(value) > MAX_VALUE_SIZE:
        raise WireError(f"{_name(tlv_type)} value is {len(value)} bytes, at most {MAX_VALUE_SIZE} fit")
    return bytes((tlv_type, len(value))) + value


def _utf8(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise WireError(f"{what} must be str, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(f"{what} is not encodable as UTF-8: {exc}") from None


def _uint(value: int, bits: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise WireError(f"{what} must be an integer in [0, 2**{bits}), got {value!r}")
    return value


def _nonce(nonce: bytes) -> bytes:
    if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != NONCE_SIZE:
        raise WireError(f"Nonce must be exactly {NONCE_SIZE} bytes")
    return bytes(nonce)


def _metadata_tlvs(pairs: Sequence[Tuple[str, str]]) -> bytes:
    """Metadata TLVs in canonical form: pairs sorted by key bytes (stable), packed greedily."""
    items: List[Tuple[bytes, bytes]] = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise WireError(f"metadata entries must be (key, value) pairs, got {pair!r}")
        key = _utf8(pair[0], "metadata key")
        value = _utf8(pair[1], "metadata value")
        if len(key) + len(value) + 2 > MAX_VALUE_SIZE:
            raise WireError(f"metadata pair {pair[0]!r} is {len(key) + len(value) + 2} bytes, "
                            f"at most {MAX_VALUE_SIZE} fit in one TLV")
        items.append((key, value))
    items.sort(key=lambda kv: kv[0])
    out = bytearray()
    current = bytearray()
    for key, value in items:
        entry = bytes((len(key),)) + key + bytes((len(value),)) + value
        if len(current) + len(entry) > MAX_VALUE_SIZE:
            out += _tlv(METADATA, bytes(current))
            current.clear()
        current += entry
    if current:
        out += _tlv(METADATA, bytes(current))
    return bytes(out)


def _unknown_tlvs(unknown: Sequence[Tlv]) -> bytes:
    out = bytearray()
    for tlv in unknown:
        if not isinstance(tlv, Tlv):
            raise WireError(f"unknown TLVs must be Tlv instances, got {tlv!r}")
        _uint(tlv.type, 8, "unknown TLV type")
        if tlv.type == 0 or tlv.type in TLV_NAMES:
            raise WireError(f"Tlv type {tlv.type} is reserved or known; use the typed field")
        out += _tlv(tlv.type, bytes(tlv.value))
    return bytes(out)


def padding_tlvs(total: int) -> bytes:
    """Padding TLVs of exactly `total` bytes on the wire (headers included); b"" for 0.

    Raises WireError for `total == 1` (no TLV is 1 byte) or negative. Totals above 257 are split
    over several TLVs, never leaving a 1-byte remainder.
    """
    if not isinstance(total, int) or total < 0 or total == 1:
        raise WireError(f"cannot build {total!r} bytes of padding: a Padding TLV is 2..257 bytes")
    out = bytearray()
    while total:
        chunk = min(total, MAX_TLV_SIZE)
        if total - chunk == 1:
            chunk -= 1
        out += bytes((PADDING, chunk - TLV_HEADER_SIZE)) + bytes(chunk - TLV_HEADER_SIZE)
        total -= chunk
    return bytes(out)


def _signature_tlv_size(signer: Signer) -> int:
    return TLV_HEADER_SIZE + SIGNATURE_FIXED_SIZE + signer.signature_length


def _signature_block_tlv(block: SignatureBlock) -> bytes:
    _uint(block.algorithm, 8, "signature algorithm")
    _uint(block.key_id, 32, "signature key id")
    if len(block.signature) > MAX_SIGNATURE_BYTES:
        raise WireError(f"signature is {len(block.signature)} bytes, at most {MAX_SIGNATURE_BYTES} fit")
    value = struct.pack(">BIH", block.algorithm, block.key_id, len(block.signature)) + bytes(block.signature)
    return _tlv(SIGNATURE, value)


def signature_tlv(signer: Signer, data: bytes) -> bytes:
    """The Signature Block TLV for `data` (the exact bytes of all preceding TLVs, draft §8)."""
    sig = signer.sign(bytes(data))
    if len(sig) != signer.signature_length:
        raise WireError(f"signer returned {len(sig)} bytes, declared {signer.signature_length}")
    return _signature_block_tlv(SignatureBlock(signer.algorithm, signer.key_id, sig))


def _request_body(req: Request) -> bytearray:
    out = bytearray(_tlv(NONCE, _nonce(req.nonce)))
    if req.precision:
        out += _tlv(PRECISION, b"")
    if req.signature_request:
        out += _tlv(SIGNATURE_REQUEST, b"")
    if req.metadata_query:
        out += _tlv(METADATA_QUERY, b"")
    out += _metadata_tlvs(req.metadata)
    out += _unknown_tlvs(req.unknown)
    return out


def encode_request(req: Request) -> bytes:
    """Encode a request: Nonce, Precision, Signature Request, Metadata Query, Metadata, unknown,
    Padding (`req.padding` bytes)."""
    return bytes(_request_body(req) + padding_tlvs(req.padding))


def pad_request(req: Request, size: int = PRECISION_REQUEST_SIZE) -> Request:
    """`req` with the padding that makes it encode to exactly `size` bytes (WireError if impossible)."""
    unpadded = len(_request_body(req))
    deficit = size - unpadded
    if deficit < 0 or deficit == 1:
        raise WireError(f"request is {unpadded} bytes unpadded: cannot pad it to exactly {size}")
    return Request(req.nonce, req.precision, req.signature_request, req.metadata_query,
                   req.metadata, req.unknown, deficit)


def _clock_quality_tlv(cq: ClockQuality) -> bytes:
    value = struct.pack(
        ">BBHH",
        _uint(cq.clock_class, 8, "clock class"),
        0,
        _uint(cq.error_us, 16, "clock quality error_us"),
        _uint(cq.drift_ppb, 16, "clock quality drift_ppb"),
    ) + _utf8(cq.tag, "clock quality tag")
    return _tlv(CLOCK_QUALITY, value)


def _time_source_tlv(ts: TimeSourceInfo) -> bytes:
    value = bytes((_uint(ts.stratum, 8, "stratum"), _uint(ts.source_type, 8, "source type")))
    return _tlv(TIME_SOURCE, value + _utf8(ts.info, "time source info"))


def _response_body(
    nonce: bytes,
    receive_ts: int,
    send_ts: int,
    precision: bool,
    clock_quality: Optional[ClockQuality],
    time_source: Optional[TimeSourceInfo],
    metadata: Sequence[Tuple[str, str]],
    unknown: Sequence[Tlv],
) -> bytearray:
    """Response TLVs in canonical order, up to (not including) Padding and Signature Block."""
    out = bytearray(_tlv(NONCE, _nonce(nonce)))
    out += _tlv(RECEIVE_TS, _uint(receive_ts, 64, "receive timestamp").to_bytes(8, "big"))
    out += _tlv(SEND_TS, _uint(send_ts, 64, "send timestamp").to_bytes(8, "big"))
    if precision:
        out += _tlv(PRECISION, b"")
    if clock_quality is not None:
        out += _clock_quality_tlv(clock_quality)
    if time_source is not None:
        out += _time_source_tlv(time_source)
    out += _metadata_tlvs(metadata)
    out += _unknown_tlvs(unknown)
    return out


def encode_response(resp: Response, signer: Optional[Signer] = None) -> bytes:
    """Encode a response in canonical TLV order with `resp.padding` bytes of padding.

    With `signer`, a fresh Signature Block is appended; otherwise `resp.signature`, if any, is
    appended verbatim (it is not checked). Servers stamping T3 late use `ResponseBuilder`.
    """
    body = _response_body(resp.nonce, resp.receive_ts, resp.send_ts, resp.precision,
                          resp.clock_quality, resp.time_source, resp.metadata, resp.unknown)
    body += padding_tlvs(resp.padding)
    data = bytes(body)
    if signer is not None:
        return data + signature_tlv(signer, data)
    if resp.signature is not None:
        return data + _signature_block_tlv(resp.signature)
    return data


def encode_error(code: int, reason: str = "", signer: Optional[Signer] = None) -> bytes:
    """An Error response (type 249 alone, signed when `signer` is given).

    A reason longer than MAX_REASON_BYTES of UTF-8 is cut at a character boundary.
    """
    raw = _utf8(reason, "error reason")
    if len(raw) > MAX_REASON_BYTES:
        raw = raw[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
    data = _tlv(ERROR, bytes((_uint(code, 8, "error code"), 0)) + raw)
    if signer is not None:
        return data + signature_tlv(signer, data)
    return data


class ResponseBuilder:
    """A response encoded before T3 is known, so the server can stamp T3 as late as possible.

    `buffer` holds every TLV except the Signature Block, with T3's 8 bytes zero at
    `send_ts_offset`. The server writes T3 there (`tsq.clock.stamp_ntp64(b.buffer,
    b.send_ts_offset)`) and calls `finish()`, which signs the buffer's exact bytes when a signer
    is set. `size` is the final length, known in advance because signature lengths are fixed.

    `pad_to` (the request's length in Precision Mode) adds Padding before the Signature Block so
    the response is exactly `pad_to` bytes. The Precision ack is sent only when that equality holds
    (§6.4: a negotiated Precision Mode MUST give equal lengths): when the acknowledged response
    cannot be padded to `pad_to` (it is already longer, or exactly one byte short, which no TLV can
    fill), the ack is dropped and the response is padded to `pad_to` if that is possible without
    it, else sent unpadded — padding never makes a response longer than its request.
    `precision_acked` and `padded_exactly` say what happened. Without `pad_to` the ack follows
    `req.precision` (the caller decides the policy).
    """

    def __init__(
        self,
        req: Request,
        receive_ts: int,
        *,
        clock_quality: Optional[ClockQuality] = None,
        time_source: Optional[TimeSourceInfo] = None,
        metadata: Sequence[Tuple[str, str]] = (),
        signer: Optional[Signer] = None,
        pad_to: Optional[int] = None,
        unknown: Sequence[Tlv] = (),
    ) -> None:
        signature_size = _signature_tlv_size(signer) if signer is not None else 0
        if signature_size > MAX_TLV_SIZE:
            raise WireError(f"signer's {signer.signature_length if signer else 0}-byte signature "
                            "does not fit a TLV")
        ack = req.precision
        body = _response_body(req.nonce, receive_ts, 0, ack, clock_quality, time_source, metadata, unknown)
        self.padded_exactly = pad_to is None
        if pad_to is not None:
            deficit = pad_to - len(body) - signature_size
            if ack and not (deficit == 0 or deficit >= 2):
                ack = False
                body = _response_body(req.nonce, receive_ts, 0, False, clock_quality, time_source,
                                      metadata, unknown)
                deficit += TLV_HEADER_SIZE
            if deficit == 0 or deficit >= 2:
                body += padding_tlvs(deficit)
                self.padded_exactly = True
        self.precision_acked = ack
        self.buffer: bytearray = body
        self.send_ts_offset: int = SEND_TS_OFFSET
        self.size: int = len(body) + signature_size
        self._signer = signer

    def finish(self) -> bytes:
        """The final response bytes: the buffer (T3 stamped by now) plus any Signature Block."""
        data = bytes(self.buffer)
        if self._signer is None:
            return data
        return data + signature_tlv(self._signer, data)


# ---------------------------------------------------------------------------------------------
# Decoding

# (type, offset of the TLV, offset of its value, end of its value)
_Span = Tuple[int, int, int, int]


def _as_bytes(data: Union[bytes, bytearray, memoryview]) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise WireError(f"TSQ message must be bytes, not {type(data).__name__}")


def _split(data: bytes) -> List[_Span]:
    spans: List[_Span] = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < TLV_HEADER_SIZE:
            raise WireError(f"truncated TLV header at offset {pos}")
        tlv_type = data[pos]
        start = pos + TLV_HEADER_SIZE
        stop = start + data[pos + 1]
        if stop > end:
            raise WireError(f"{_name(tlv_type)} at offset {pos} declares {data[pos + 1]} value bytes, "
                            f"only {end - start} remain")
        spans.append((tlv_type, pos, start, stop))
        pos = stop
    if not spans:
        raise WireError("empty message")
    return spans


def _decode_utf8(raw: bytes, what: str, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} at offset {offset} is not valid UTF-8 ({exc.reason})") from None


def _expect_length(tlv_type: int, offset: int, value: bytes, length: int) -> None:
    if len(value) != length:
        raise WireError(f"{_name(tlv_type)} at offset {offset} must be {length} bytes, is {len(value)}")


def _decode_metadata(value: bytes, offset: int) -> List[Tuple[str, str]]:
    pairs: List[Tuple[str, str]] = []
    pos = 0
    while pos < len(value):
        parts: List[str] = []
        for what in ("key", "value"):
            if pos >= len(value):
                raise WireError(f"Metadata at offset {offset}: {what} length missing")
            size = value[pos]
            if pos + 1 + size > len(value):
                raise WireError(f"Metadata at offset {offset}: {what} overruns the TLV")
            parts.append(_decode_utf8(value[pos + 1 : pos + 1 + size], f"Metadata {what}", offset))
            pos += 1 + size
        pairs.append((parts[0], parts[1]))
    return pairs


def _decode_padding(value: bytes, offset: int) -> None:
    if value.count(0) != len(value):
        raise WireError(f"Padding at offset {offset} is not zero-filled")


def _decode_signature(value: bytes, offset: int) -> SignatureBlock:
    if len(value) < SIGNATURE_FIXED_SIZE:
        raise WireError(f"Signature Block at offset {offset} is {len(value)} bytes, needs at least "
                        f"{SIGNATURE_FIXED_SIZE}")
    algorithm, key_id, sig_len = struct.unpack_from(">BIH", value)
    if sig_len != len(value) - SIGNATURE_FIXED_SIZE:
        raise WireError(f"Signature Block at offset {offset} declares {sig_len} signature bytes, "
                        f"carries {len(value) - SIGNATURE_FIXED_SIZE}")
    return SignatureBlock(algorithm, key_id, value[SIGNATURE_FIXED_SIZE:])


def _check_reserved(value: bytes, index: int, tlv_type: int, offset: int) -> None:
    if value[index] != 0:
        raise WireError(f"{_name(tlv_type)} at offset {offset}: reserved byte is {value[index]}, must be 0")


def _decode_clock_quality(value: bytes, offset: int) -> ClockQuality:
    if len(value) < 6:
        raise WireError(f"Clock Quality at offset {offset} is {len(value)} bytes, needs at least 6")
    _check_reserved(value, 1, CLOCK_QUALITY, offset)
    clock_class, _reserved, error_us, drift_ppb = struct.unpack_from(">BBHH", value)
    return ClockQuality(clock_class, error_us, drift_ppb,
                        _decode_utf8(value[6:], "Clock Quality tag", offset))


def _decode_time_source(value: bytes, offset: int) -> TimeSourceInfo:
    if len(value) < 2:
        raise WireError(f"Time Source Info at offset {offset} is {len(value)} bytes, needs at least 2")
    return TimeSourceInfo(value[0], value[1], _decode_utf8(value[2:], "Time Source Info", offset))


class _Common:
    """Accumulates the TLVs requests and responses share, enforcing singletons and padding."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.metadata: List[Tuple[str, str]] = []
        self.unknown: List[Tlv] = []
        self.padding = 0

    def singleton(self, tlv_type: int, offset: int) -> None:
        if tlv_type in self.seen:
            raise WireError(f"duplicate {_name(tlv_type)} at offset {offset}")
        self.seen.add(tlv_type)

    def take(self, tlv_type: int, offset: int, value: bytes) -> bool:
        """Handle a TLV valid in both directions; False if the caller must handle it."""
        if tlv_type == 0:
            return True  # reserved, so unknown to every implementation: ignored (§6.3.1), not kept
        if self.padding and tlv_type != PADDING:
            raise WireError(f"{_name(tlv_type)} at offset {offset} follows Padding: "
                            "Padding must be at the end")
        if tlv_type == NONCE:
            raise WireError(f"duplicate Nonce (type 1) at offset {offset}")
        if tlv_type == METADATA:
            self.metadata.extend(_decode_metadata(value, offset))
        elif tlv_type == PADDING:
            _decode_padding(value, offset)
            self.padding += TLV_HEADER_SIZE + len(value)
        elif tlv_type == PRECISION:
            # §6.4: "current implementations MUST treat the TLV as zero-length": a value (a future
            # negotiation payload) is ignored, not an error.
            self.singleton(tlv_type, offset)
        elif tlv_type not in TLV_NAMES:
            self.unknown.append(Tlv(tlv_type, value))
        else:
            return False
        return True


def _check_nonce(data: bytes, span: _Span) -> bytes:
    tlv_type, offset, start, stop = span
    if tlv_type != NONCE:
        raise WireError(f"message must begin with a Nonce (type 1), not {_name(tlv_type)}")
    value = data[start:stop]
    _expect_length(NONCE, offset, value, NONCE_SIZE)
    return value


def decode_request(data: Union[bytes, bytearray, memoryview]) -> Request:
    """Decode and validate a TSQ Request (raises WireError only)."""
    data = _as_bytes(data)
    spans = _split(data)
    nonce = _check_nonce(data, spans[0])
    common = _Common()
    flags = {PRECISION: False, SIGNATURE_REQUEST: False, METADATA_QUERY: False}
    for tlv_type, offset, start, stop in spans[1:]:
        value = data[start:stop]
        if tlv_type in _RESPONSE_ONLY:
            raise WireError(f"{_name(tlv_type)} at offset {offset} is not allowed in a request")
        if not common.take(tlv_type, offset, value):
            # Only the zero-length request flags are left.
            common.singleton(tlv_type, offset)
            _expect_length(tlv_type, offset, value, 0)
        if tlv_type in flags:
            flags[tlv_type] = True
    return Request(
        nonce=nonce,
        precision=flags[PRECISION],
        signature_request=flags[SIGNATURE_REQUEST],
        metadata_query=flags[METADATA_QUERY],
        metadata=tuple(common.metadata),
        unknown=tuple(common.unknown),
        padding=common.padding,
    )


def _decode_error_response(data: bytes) -> ErrorResponse:
    """An Error response: the Error TLV, and a Signature Block when exactly one follows it.

    §6.3.2: a client receiving an Error TLV MUST treat the request as failed and MUST NOT parse any
    further TLV, so whatever else follows is ignored unread; the one exception is the Signature
    Block the same section allows after it (which covers the Error TLV).
    """
    if len(data) < TLV_HEADER_SIZE or len(data) < TLV_HEADER_SIZE + data[1]:
        raise WireError(f"Error TLV at offset 0 declares {data[1] if len(data) > 1 else '?'} value bytes, "
                        f"only {max(0, len(data) - TLV_HEADER_SIZE)} remain")
    stop = TLV_HEADER_SIZE + data[1]
    value = data[TLV_HEADER_SIZE:stop]
    if len(value) < 2:
        raise WireError(f"Error TLV at offset 0 is {len(value)} bytes, needs at least 2")
    _check_reserved(value, 1, ERROR, 0)
    reason = _decode_utf8(value[2:], "Error reason", 0)
    signature: Optional[SignatureBlock] = None
    rest = data[stop:]
    if len(rest) >= TLV_HEADER_SIZE and rest[0] == SIGNATURE and len(rest) == TLV_HEADER_SIZE + rest[1]:
        signature = _decode_signature(rest[TLV_HEADER_SIZE:], stop)
    return ErrorResponse(value[0], reason, signature, data[:stop] if signature is not None else b"")


def decode_response(data: Union[bytes, bytearray, memoryview]) -> Union[Response, ErrorResponse]:
    """Decode and validate a TSQ Response or Error response (raises WireError only)."""
    data = _as_bytes(data)
    if data and data[0] == ERROR:
        return _decode_error_response(data)
    spans = _split(data)
    nonce = _check_nonce(data, spans[0])
    stamps: List[int] = []
    for index, expected in ((1, RECEIVE_TS), (2, SEND_TS)):
        if len(spans) <= index or spans[index][0] != expected:
            raise WireError(f"response must carry {_name(expected)} as TLV #{index + 1}")
        _t, offset, start, stop = spans[index]
        value = data[start:stop]
        _expect_length(expected, offset, value, 8)
        stamps.append(int.from_bytes(value, "big"))
    common = _Common()
    clock_quality: Optional[ClockQuality] = None
    time_source: Optional[TimeSourceInfo] = None
    signature: Optional[SignatureBlock] = None
    signed_data = b""
    last = len(spans) - 1
    for index in range(3, len(spans)):
        tlv_type, offset, start, stop = spans[index]
        value = data[start:stop]
        if tlv_type == SIGNATURE:
            if index != last:
                raise WireError(f"Signature Block at offset {offset} is not the last TLV")
            signature = _decode_signature(value, offset)
            signed_data = data[:offset]
            continue
        if tlv_type in _REQUEST_ONLY:
            raise WireError(f"{_name(tlv_type)} at offset {offset} is not allowed in a response")
        if tlv_type in (ERROR, RECEIVE_TS, SEND_TS):
            raise WireError(f"{_name(tlv_type)} at offset {offset} is misplaced or duplicated"
                            + (": an Error TLV must appear alone" if tlv_type == ERROR else ""))
        if common.take(tlv_type, offset, value):
            continue
        common.singleton(tlv_type, offset)
        if tlv_type == CLOCK_QUALITY:
            clock_quality = _decode_clock_quality(value, offset)
        else:  # TIME_SOURCE is the only response TLV left
            time_source = _decode_time_source(value, offset)
    return Response(
        nonce=nonce,
        receive_ts=stamps[0],
        send_ts=stamps[1],
        precision=PRECISION in common.seen,
        clock_quality=clock_quality,
        time_source=time_source,
        metadata=tuple(common.metadata),
        unknown=tuple(common.unknown),
        padding=common.padding,
        signature=signature,
        signed_data=signed_data,
    )
