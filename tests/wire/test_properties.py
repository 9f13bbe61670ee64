"""Property tests: round trips, totality of the decoders, signature integrity."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Optional, Union

from hypothesis import assume, example, given
from hypothesis import strategies as st

from tsq.auth import Ed25519Signer, HmacSigner, Verifier
from tsq.testing.wire import (
    clock_qualities,
    error_reasons,
    metadata,
    nonces,
    ntp64,
    requests,
    responses,
    time_sources,
    u8,
)
from tsq.wire import (
    ErrorResponse,
    Request,
    Response,
    ResponseBuilder,
    WireError,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
)

ED = Ed25519Signer(0xA1B2C3D4, bytes(range(32)))
HM = HmacSigner(7, b"\x5a" * 32)
VERIFIER = Verifier({ED.key_id: ED.public_key(), HM.key_id: b"\x5a" * 32})
signers = st.sampled_from([ED, HM])
Decoded = Union[Request, Response, ErrorResponse]
AnySigner = Union[Ed25519Signer, HmacSigner]
OptSigner = Optional[AnySigner]


@given(requests)
def test_request_round_trip(req: Request) -> None:
    assert decode_request(encode_request(req)) == req


@given(responses)
def test_response_round_trip(resp: Response) -> None:
    data = encode_response(resp)
    got = decode_response(data)
    assert got == resp
    assert isinstance(got, Response)
    if resp.signature is not None:
        assert got.signed_data + data[len(got.signed_data):] == data
        assert len(data) - len(got.signed_data) == 9 + len(resp.signature.signature)


@given(u8, error_reasons)
def test_error_round_trip(code: int, reason: str) -> None:
    assert decode_response(encode_error(code, reason)) == ErrorResponse(code, reason)


def _total(decode: Callable[[bytes], Decoded], data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)


@given(st.binary(max_size=600))
@example(b"")
@example(b"\x01\x10" + bytes(16) + b"\x02")
def test_decoders_are_total_on_random_bytes(data: bytes) -> None:
    _total(decode_request, data)
    _total(decode_response, data)


def _valid_messages() -> st.SearchStrategy[bytes]:
    return st.one_of(
        requests.map(encode_request),
        responses.map(encode_response),
        st.builds(encode_error, u8, error_reasons),
        st.builds(lambda r, s: encode_response(r, s), responses, signers),
    )


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(_valid_messages()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(u8)
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[pos]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


@given(_mutated())
def test_decoders_are_total_on_mutated_messages(data: bytes) -> None:
    _total(decode_request, data)
    _total(decode_response, data)


@given(_valid_messages())
def test_decoders_accept_bytearray_and_memoryview(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        try:
            expected: object = decode(data)
        except WireError as exc:
            expected = str(exc)
        for view in (bytearray(data), memoryview(data)):
            try:
                got: object = decode(view)
            except WireError as exc:
                got = str(exc)
            assert got == expected


@given(_mutated())
def test_decode_then_encode_is_a_fixed_point(data: bytes) -> None:
    try:
        resp = decode_response(data)
    except WireError:
        return
    # Encoding is canonical (metadata sorted by key bytes); otherwise nothing changes.
    if isinstance(resp, Response):
        ordered = tuple(sorted(resp.metadata, key=lambda kv: kv[0].encode()))
        canonical = dataclasses.replace(resp, metadata=ordered)
        assert decode_response(encode_response(resp)) == canonical
    else:
        unsigned = dataclasses.replace(resp, signature=None)
        assert decode_response(encode_error(resp.code, resp.reason)) == unsigned


@given(st.binary(max_size=300), signers)
def test_signatures_verify_and_any_bit_flip_fails(data: bytes, signer: AnySigner) -> None:
    resp = Response(bytes(16), 1, 2)
    block = decode_response(encode_response(resp, signer)).signature
    assert block is not None
    sig = signer.sign(data)
    ok = dataclasses.replace(block, signature=sig)
    assert VERIFIER.verify(ok, data)
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not VERIFIER.verify(ok, bytes(flipped))
    for bit in range(len(sig) * 8):
        bad = bytearray(sig)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert not VERIFIER.verify(dataclasses.replace(ok, signature=bytes(bad)), data)


@given(responses, signers, st.data())
def test_signed_message_bit_flip_is_rejected_or_fails_verification(
    resp: Response, signer: AnySigner, data: st.DataObject
) -> None:
    wire = encode_response(dataclasses.replace(resp, signature=None), signer)
    got = decode_response(wire)
    assert VERIFIER.verify_message(got)
    bit = data.draw(st.integers(0, len(wire) * 8 - 1))
    mutated = bytearray(wire)
    mutated[bit // 8] ^= 1 << (bit % 8)
    try:
        tampered = decode_response(bytes(mutated))
    except WireError:
        return
    assert not VERIFIER.verify_message(tampered)


@given(u8, error_reasons, signers)
def test_signed_error_covers_the_error_tlv(code: int, reason: str, signer: AnySigner) -> None:
    wire = encode_error(code, reason, signer)
    got = decode_response(wire)
    assert isinstance(got, ErrorResponse) and got.signature is not None
    assert got.signed_data == encode_error(code, reason)
    assert VERIFIER.verify_message(got)


@given(
    nonces, st.booleans(), st.booleans(), metadata, ntp64, ntp64,
    st.none() | clock_qualities, st.none() | time_sources, metadata, st.none() | signers,
)
def test_builder_pads_to_the_request_length_or_says_why_not(
    nonce: bytes, sig_req: bool, md_query: bool, req_md: tuple[tuple[str, str], ...], t2: int, t3: int,
    cq: object, ts: object, resp_md: tuple[tuple[str, str], ...],
    signer: OptSigner,
) -> None:
    req = Request(nonce, True, sig_req, md_query, req_md)
    unpadded = len(encode_request(req))
    req_size = max(unpadded, 256)
    if req_size - unpadded == 1:
        req_size += 1
    req = dataclasses.replace(req, padding=req_size - unpadded)
    req_bytes = encode_request(req)
    assert len(req_bytes) == req_size
    builder = ResponseBuilder(decode_request(req_bytes), t2, clock_quality=cq,  # type: ignore[arg-type]
                              time_source=ts, metadata=resp_md, signer=signer,  # type: ignore[arg-type]
                              pad_to=len(req_bytes))
    builder.buffer[builder.send_ts_offset:builder.send_ts_offset + 8] = t3.to_bytes(8, "big")
    out = builder.finish()
    assert len(out) == builder.size
    got = decode_response(out)
    assert isinstance(got, Response)
    assert (got.receive_ts, got.send_ts, got.nonce) == (t2, t3, nonce)
    # §6.4: the ack is sent only with equal lengths.
    assert got.precision == builder.precision_acked
    if builder.precision_acked:
        assert builder.padded_exactly and len(out) == len(req_bytes)
    if builder.padded_exactly:
        assert len(out) == len(req_bytes)
    else:
        # The documented fallback: no ack and no padding, because the response is longer, or
        # because without the 2-byte ack it is exactly one byte short (no TLV is one byte long).
        assert got.padding == 0 and not got.precision
        assert len(out) > len(req_bytes) or len(out) == len(req_bytes) - 1
    if signer is not None:
        assert VERIFIER.verify_message(got)


@given(responses, st.none() | signers)
def test_builder_matches_encode_response(resp: Response, signer: OptSigner) -> None:
    assume(resp.padding == 0)
    resp = dataclasses.replace(resp, signature=None)
    req = Request(resp.nonce, precision=resp.precision)
    builder = ResponseBuilder(req, resp.receive_ts, clock_quality=resp.clock_quality,
                              time_source=resp.time_source, metadata=resp.metadata, unknown=resp.unknown,
                              signer=signer)
    assert builder.buffer[builder.send_ts_offset:builder.send_ts_offset + 8] == bytes(8)
    builder.buffer[builder.send_ts_offset:builder.send_ts_offset + 8] = resp.send_ts.to_bytes(8, "big")
    assert builder.finish() == encode_response(resp, signer)

