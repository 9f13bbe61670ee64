"""The codec against the hand-built vectors in tests/vectors/wire_*.json."""

from __future__ import annotations

from typing import Any, Dict

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tsq.auth import Ed25519Signer, HmacSigner, Signer, Verifier
from tsq.testing.wire import error_from_json, load_vectors, request_from_json, response_from_json
from tsq.wire import (
    ErrorResponse,
    Response,
    ResponseBuilder,
    WireError,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
)

VALID = load_vectors("wire_valid.json")
MALFORMED = load_vectors("wire_malformed.json")["vectors"]
KEYS = VALID["keys"]


def _ids(v: Dict[str, Any]) -> str:
    return str(v.get("name") or v["reason"])


def _signer(name: str) -> Signer:
    if name == "ed25519":
        return Ed25519Signer(KEYS["ed25519"]["key_id"], bytes.fromhex(KEYS["ed25519"]["seed"]))
    return HmacSigner(KEYS["hmac"]["key_id"], bytes.fromhex(KEYS["hmac"]["secret"]))


def _verifier() -> Verifier:
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(KEYS["ed25519"]["public"]))
    return Verifier({KEYS["ed25519"]["key_id"]: public,
                     KEYS["hmac"]["key_id"]: bytes.fromhex(KEYS["hmac"]["secret"])})


def _by_kind(kind: str) -> list[Dict[str, Any]]:
    return [v for v in VALID["vectors"] if v["kind"] == kind]


def test_vector_files_cover_the_brief() -> None:
    names = " ".join(v["name"] for v in VALID["vectors"])
    for needle in ("metadata example", "minimal request", "wild-style", "every optional TLV",
                   "precision-mode request", "precision-mode response", "Error response", "Ed25519-signed",
                   "HMAC-SHA256-signed", "era boundary"):
        assert needle in names
    assert len(MALFORMED) >= 60


@pytest.mark.parametrize("vec", _by_kind("request"), ids=_ids)
def test_request_vectors(vec: Dict[str, Any]) -> None:
    data = bytes.fromhex(vec["hex"])
    expected = request_from_json(vec["expect"])
    assert decode_request(data) == expected
    if vec["canonical"]:
        assert encode_request(expected) == data
    else:
        assert decode_request(encode_request(expected)) == expected


def test_draft_metadata_example_bytes() -> None:
    vec = next(v for v in VALID["vectors"] if "metadata_value" in v)
    # The draft's own example, §6.3.2: [0x04] 'site' [0x07] 'us-east'.
    assert vec["metadata_value"] == "04 73 69 74 65 07 75 73 2d 65 61 73 74".replace(" ", "")
    assert vec["hex"].endswith("fd0d" + vec["metadata_value"])
    assert decode_request(bytes.fromhex(vec["hex"])).metadata == (("site", "us-east"),)


@pytest.mark.parametrize("vec", _by_kind("response"), ids=_ids)
def test_response_vectors(vec: Dict[str, Any]) -> None:
    data = bytes.fromhex(vec["hex"])
    expected = response_from_json(vec["expect"])
    got = decode_response(data)
    assert isinstance(got, Response)
    assert got == expected
    if vec["canonical"]:
        assert encode_response(expected) == data
    else:
        assert decode_response(encode_response(expected)) == expected
    if "signed_length" in vec:
        assert got.signed_data == data[: vec["signed_length"]]
        assert _verifier().verify_message(got)
        # Our signer over the same bytes reproduces the signature exactly (Ed25519 and HMAC are
        # deterministic).
        assert got.signature is not None
        assert _signer(vec["key"]).sign(got.signed_data) == got.signature.signature
        if vec["canonical"]:
            assert encode_response(got, signer=_signer(vec["key"])) == data
    else:
        assert got.signed_data == b""
        assert not _verifier().verify_message(got)


@pytest.mark.parametrize("vec", _by_kind("error"), ids=_ids)
def test_error_vectors(vec: Dict[str, Any]) -> None:
    data = bytes.fromhex(vec["hex"])
    expected = error_from_json(vec["expect"])
    got = decode_response(data)
    assert isinstance(got, ErrorResponse)
    assert got == expected
    signer = _signer(vec["key"]) if "key" in vec else None
    encoded = encode_error(expected.code, expected.reason, signer)
    # Non-canonical vectors carry bytes after the Error TLV that are never parsed (§6.3.2).
    assert encoded == data if vec.get("canonical", True) else data.startswith(encoded)
    if signer is not None:
        assert got.signed_data == data[: vec["signed_length"]]
        assert _verifier().verify_message(got)


def _stamp_t3(builder: ResponseBuilder, value: int) -> None:
    builder.buffer[builder.send_ts_offset : builder.send_ts_offset + 8] = value.to_bytes(8, "big")


@pytest.mark.parametrize("response_name", ["precision-mode response", "precision-mode signed response"])
def test_precision_pair_built_by_response_builder(response_name: str) -> None:
    req_vec = next(v for v in VALID["vectors"] if v.get("pair_with") == "precision-mode response")
    resp_vec = next(v for v in VALID["vectors"] if v.get("pair_name") == response_name)
    req_bytes = bytes.fromhex(req_vec["hex"])
    req = decode_request(req_bytes)
    assert req.precision
    expected = response_from_json(resp_vec["expect"])
    signer = _signer(resp_vec["key"]) if "key" in resp_vec else None
    builder = ResponseBuilder(req, expected.receive_ts, signer=signer, pad_to=len(req_bytes))
    assert builder.size == len(req_bytes)
    _stamp_t3(builder, expected.send_ts)
    out = builder.finish()
    assert out == bytes.fromhex(resp_vec["hex"])
    assert len(out) == len(req_bytes) and builder.padded_exactly


def test_era_boundary_vector_with_clock_helpers() -> None:
    vec = next(v for v in VALID["vectors"] if "unix_ns" in v)
    got = decode_response(bytes.fromhex(vec["hex"]))
    assert isinstance(got, Response)
    assert got.receive_ts > 0xFFFFFFFF_00000000 and got.send_ts < 1 << 32
    clock = pytest.importorskip("tsq.clock")
    pivot = vec["unix_ns"]["pivot"]
    assert clock.ntp64_to_unix_ns(got.receive_ts, pivot) == vec["unix_ns"]["receive"]
    assert clock.ntp64_to_unix_ns(got.send_ts, pivot) == vec["unix_ns"]["send"]


@pytest.mark.parametrize("vec", MALFORMED, ids=_ids)
def test_malformed_vectors(vec: Dict[str, Any]) -> None:
    decode = decode_request if vec["kind"] == "request" else decode_response
    with pytest.raises(WireError, match=vec["match"]):
        decode(bytes.fromhex(vec["hex"]))
