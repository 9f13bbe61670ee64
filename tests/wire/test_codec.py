"""Unit tests of the codec's decisions (docs/wire.md) and its encode-side validation."""

from __future__ import annotations

import dataclasses

import pytest

from tsq import wire
from tsq.auth import Ed25519Signer, HmacSigner
from tsq.wire import (
    MAX_REASON_BYTES,
    PRECISION_REQUEST_SIZE,
    SEND_TS_OFFSET,
    ClockQuality,
    ErrorResponse,
    Request,
    Response,
    ResponseBuilder,
    SignatureBlock,
    TimeSourceInfo,
    Tlv,
    WireError,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    pad_request,
    padding_tlvs,
)

NONCE = bytes(range(100, 116))


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


def test_type_constants_match_the_draft() -> None:
    assert (wire.NONCE, wire.RECEIVE_TS, wire.SEND_TS) == (1, 2, 3)
    optional = (wire.METADATA_QUERY, wire.CLOCK_QUALITY, wire.ERROR, wire.PRECISION, wire.TIME_SOURCE,
                wire.SIGNATURE_REQUEST, wire.METADATA, wire.PADDING, wire.SIGNATURE)
    assert optional == tuple(range(247, 256))


@pytest.mark.parametrize("total", [0, *range(2, 700)])
def test_padding_tlvs_have_the_exact_size_and_decode_to_it(total: int) -> None:
    pad = padding_tlvs(total)
    assert len(pad) == total
    assert decode_request(bytes((1, 16)) + NONCE + pad).padding == total


@pytest.mark.parametrize("total", [1, -1, -300])
def test_padding_of_impossible_sizes_is_refused(total: int) -> None:
    with pytest.raises(WireError, match="padding"):
        padding_tlvs(total)


def test_pad_request_reaches_the_precision_size() -> None:
    req = pad_request(Request(NONCE, precision=True, signature_request=True, metadata=(("k", "v"),)))
    assert len(encode_request(req)) == PRECISION_REQUEST_SIZE


def test_pad_request_refuses_when_it_cannot_be_exact() -> None:
    req = Request(NONCE)
    with pytest.raises(WireError, match="cannot pad"):
        pad_request(req, 19)  # unpadded is 18: one byte short is unfillable
    with pytest.raises(WireError, match="cannot pad"):
        pad_request(req, 17)
    assert len(encode_request(pad_request(req, 20))) == 20


def test_precision_size_fits_a_typical_full_signed_response() -> None:
    """The documented budget for PRECISION_REQUEST_SIZE: a response with every typical optional TLV
    and an Ed25519 signature still fits in a padded precision request."""
    req_bytes = encode_request(pad_request(Request(NONCE, precision=True, signature_request=True,
                                                   metadata_query=True)))
    builder = ResponseBuilder(
        decode_request(req_bytes), 1,
        clock_quality=ClockQuality(1, 1, 10, "gnss-pps"),
        time_source=TimeSourceInfo(1, 1, "gps0 pps, site us-east"),
        metadata=(("host", "tsq-gw-0001.example"), ("site", "us-east"), ("version", "tsq 0.1.0")),
        signer=Ed25519Signer(1, bytes(32)), pad_to=len(req_bytes))
    assert builder.padded_exactly and len(builder.finish()) == PRECISION_REQUEST_SIZE


def test_builder_one_byte_short_drops_the_ack_and_still_pads_equal() -> None:
    """Draft §6.4: an acknowledged Precision Mode MUST give equal lengths. One byte short cannot be
    padded with the ack (no TLV is 1 byte); without the 2-byte ack it can, so the ack goes."""
    req = Request(NONCE, precision=True)
    unpadded_response = len(ResponseBuilder(req, 5).finish())
    builder = ResponseBuilder(req, 5, pad_to=unpadded_response + 1)
    out = builder.finish()
    assert builder.padded_exactly and not builder.precision_acked
    assert len(out) == unpadded_response + 1 == builder.size
    assert not decode_response(out).precision
    builder = ResponseBuilder(req, 5, pad_to=unpadded_response + 2)
    assert builder.padded_exactly and builder.precision_acked
    assert len(builder.finish()) == unpadded_response + 2


def test_builder_too_big_for_the_request_sends_unpadded() -> None:
    req = Request(NONCE, precision=True)
    builder = ResponseBuilder(req, 5, metadata=(("k", "v" * 200),), pad_to=60)
    out = builder.finish()
    assert not builder.padded_exactly and not builder.precision_acked and len(out) > 60
    got = decode_response(out)
    assert isinstance(got, Response) and got.padding == 0 and not got.precision


def test_builder_layout_and_late_signing() -> None:
    signer = HmacSigner(9, b"s" * 32)
    builder = ResponseBuilder(Request(NONCE, signature_request=True), 0x1122334455667788, signer=signer)
    assert builder.send_ts_offset == SEND_TS_OFFSET == 30
    assert bytes(builder.buffer[28:30]) == b"\x03\x08"
    assert bytes(builder.buffer[20:28]) == bytes.fromhex("1122334455667788")
    builder.buffer[30:38] = bytes.fromhex("99aabbccddeeff00")
    out = builder.finish()
    got = decode_response(out)
    assert isinstance(got, Response) and got.send_ts == 0x99AABBCCDDEEFF00
    assert got.signed_data == bytes(builder.buffer)
    assert got.signature == SignatureBlock(2, 9, signer.sign(bytes(builder.buffer)))
    assert builder.size == len(out) == len(builder.buffer) + 9 + 32


def test_builder_omits_ack_without_precision() -> None:
    got = decode_response(ResponseBuilder(Request(NONCE), 1).finish())
    assert isinstance(got, Response) and not got.precision


def test_wild_response_decodes() -> None:
    data = bytes((1, 16)) + NONCE + b"\x02\x08" + bytes(range(8)) + b"\x03\x08" + bytes(range(8, 16))
    assert decode_response(data) == Response(NONCE, 0x0001020304050607, 0x08090A0B0C0D0E0F)


def test_metadata_is_sorted_by_key_bytes_and_split_over_tlvs() -> None:
    pairs = (("zeta", "1"), ("Alpha", "2"), ("é", "3"), ("alpha", "4"), ("alpha", "0"))
    many = tuple((f"key{i:02d}", "v" * 40) for i in range(12))  # > 255 bytes: several TLVs
    req = Request(NONCE, metadata=pairs + many)
    data = encode_request(req)
    got = decode_request(data)
    expected = sorted(pairs + many, key=lambda kv: kv[0].encode())
    assert list(got.metadata) == expected
    # stable for duplicate keys: ("alpha", "4") stays before ("alpha", "0")
    assert [v for k, v in got.metadata if k == "alpha"] == ["4", "0"]
    assert data.count(bytes((wire.METADATA,))) >= 2


def test_decoding_preserves_metadata_wire_order() -> None:
    value = b"\x01b\x011\x01a\x012"
    got = decode_request(bytes((1, 16)) + NONCE + bytes((253, len(value))) + value)
    assert got.metadata == (("b", "1"), ("a", "2"))


def test_unknown_tlvs_are_kept_in_order_and_ignored() -> None:
    data = bytes((1, 16)) + NONCE + b"\x09\x01a\xf6\x00\x04\x02bc"
    assert decode_request(data).unknown == (Tlv(9, b"a"), Tlv(246, b""), Tlv(4, b"bc"))


def test_error_reason_is_cut_at_a_character_boundary() -> None:
    reason = "é" * 200  # 400 bytes of UTF-8
    got = decode_response(encode_error(1, reason))
    assert isinstance(got, ErrorResponse)
    assert got.reason == "é" * (MAX_REASON_BYTES // 2)
    assert len(encode_error(1, "x" * 1000)) == 257


def test_decoders_reject_non_bytes() -> None:
    with pytest.raises(WireError, match="must be bytes"):
        decode_request("hello")  # type: ignore[arg-type]
    with pytest.raises(WireError, match="must be bytes"):
        decode_response(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "req, match",
    [
        (Request(NONCE[:15]), "16 bytes"),
        (Request(NONCE, padding=1), "padding"),
        (Request(NONCE, metadata=(("k", "\udc80"),)), "UTF-8"),
        (Request(NONCE, metadata=(("k" * 200, "v" * 60),)), "at most 255"),
        (Request(NONCE, unknown=(Tlv(253, b""),)), "reserved or known"),
        (Request(NONCE, unknown=(Tlv(0, b""),)), "reserved or known"),
        (Request(NONCE, unknown=(Tlv(300, b""),)), "type"),
        (Request(NONCE, unknown=(Tlv(9, bytes(256)),)), "at most 255"),
    ],
)
def test_encode_request_refuses_invalid_values(req: Request, match: str) -> None:
    with pytest.raises(WireError, match=match):
        encode_request(req)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"receive_ts": -1}, "receive timestamp"),
        ({"send_ts": 2**64}, "send timestamp"),
        ({"clock_quality": ClockQuality(256, 0, 0)}, "clock class"),
        ({"clock_quality": ClockQuality(0, 70000, 0)}, "error_us"),
        ({"clock_quality": ClockQuality(0, 0, 0, "x" * 250)}, "at most 255"),
        ({"time_source": TimeSourceInfo(0, 0, "x" * 254)}, "at most 255"),
        ({"time_source": TimeSourceInfo(True, 0)}, "stratum"),
        ({"signature": SignatureBlock(1, 2**32, b"")}, "key id"),
        ({"signature": SignatureBlock(1, 1, bytes(249))}, "at most 248"),
    ],
)
def test_encode_response_refuses_invalid_values(change: dict[str, object], match: str) -> None:
    with pytest.raises(WireError, match=match):
        encode_response(dataclasses.replace(Response(NONCE, 1, 2), **change))  # type: ignore[arg-type]


def test_encode_error_refuses_invalid_code() -> None:
    with pytest.raises(WireError, match="error code"):
        encode_error(256, "x")


def test_dataclasses_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Request(NONCE).precision = True  # type: ignore[misc]


def test_signed_data_is_not_part_of_equality() -> None:
    a = Response(NONCE, 1, 2, signed_data=b"abc")
    assert a == Response(NONCE, 1, 2)


def test_unknown_tlvs_to_encode_must_really_be_unknown() -> None:
    for t in (0, wire.NONCE):
        with pytest.raises(wire.WireError):
            wire.encode_request(wire.Request(nonce=bytes(16), unknown=(wire.Tlv(t, b""),)))


def test_a_signer_that_breaks_its_declared_length_is_refused() -> None:
    class ShortSigner:
        algorithm, key_id, signature_length = 1, 7, 32

        def sign(self, data: bytes) -> bytes:
            return bytes(31)

    with pytest.raises(wire.WireError, match="31 bytes, declared 32"):
        wire.signature_tlv(ShortSigner(), b"tlvs")


def test_unknown_tlvs_to_encode_must_be_tlvs() -> None:
    with pytest.raises(wire.WireError, match="must be Tlv instances"):
        wire.encode_request(wire.Request(nonce=bytes(16), unknown=((200, b""),)))  # type: ignore[arg-type]


def test_an_acked_response_one_byte_over_the_request_drops_the_ack_and_stays_one_byte_short() -> None:
    """§6.4 wants equal lengths for an ack; without its 2-byte ack the response is one byte short of
    the request, which no TLV can fill: it goes unacknowledged and unpadded, never longer than asked
    (found by hypothesis on the trixie-armhf lane; the rule is the same on every platform)."""
    req = wire.Request(nonce=bytes(16), precision=True, metadata=(("k", "v"),))
    acked = wire.ResponseBuilder(req, 1 << 32).size
    b = wire.ResponseBuilder(req, 1 << 32, pad_to=acked - 1)
    out = b.finish()
    assert not b.precision_acked and not b.padded_exactly
    assert len(out) == acked - 2 and not wire.decode_response(out).precision
