"""tsq.auth: signers against published vectors, the verifier's rules, and real key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tsq.auth import (
    ALG_ED25519,
    ALG_HMAC_SHA256,
    Ed25519Signer,
    HmacSigner,
    KeyFileError,
    Signer,
    Verifier,
    generate_ed25519,
    generate_hmac,
    load_signer,
    load_verify_key,
)
from tsq.wire import Request, ResponseBuilder, SignatureBlock, decode_response

# RFC 8032 §7.1 TEST 1 (empty message).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
    "d25bf5f0595bbe24655141438e7a100b")
# RFC 4231 test case 1.
RFC4231_KEY = b"\x0b" * 20
RFC4231_MAC = bytes.fromhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")


def test_ed25519_signer_matches_rfc8032() -> None:
    signer = Ed25519Signer(1, RFC8032_SEED)
    assert signer.sign(b"") == RFC8032_SIG
    assert (signer.algorithm, signer.signature_length) == (ALG_ED25519, 64)


def test_hmac_signer_matches_rfc4231() -> None:
    signer = HmacSigner(1, RFC4231_KEY)
    assert signer.sign(b"Hi There") == RFC4231_MAC
    assert (signer.algorithm, signer.signature_length) == (ALG_HMAC_SHA256, 32)


def test_verifier_rules() -> None:
    ed = Ed25519Signer(1, RFC8032_SEED)
    hm = HmacSigner(2, RFC4231_KEY)
    verifier = Verifier({1: ed.public_key(), 2: RFC4231_KEY})
    data = b"tsq"
    assert verifier.verify(SignatureBlock(1, 1, ed.sign(data)), data)
    assert verifier.verify(SignatureBlock(2, 2, hm.sign(data)), data)
    # unknown key id
    assert not verifier.verify(SignatureBlock(1, 3, ed.sign(data)), data)
    # algorithm does not match the key held for that id
    assert not verifier.verify(SignatureBlock(2, 1, ed.sign(data)), data)
    assert not verifier.verify(SignatureBlock(1, 2, hm.sign(data)), data)
    # unknown algorithm, wrong signature lengths
    assert not verifier.verify(SignatureBlock(0, 2, hm.sign(data)), data)
    assert not verifier.verify(SignatureBlock(1, 1, ed.sign(data)[:63]), data)
    assert not verifier.verify(SignatureBlock(2, 2, hm.sign(data) + b"\x00"), data)
    assert not verifier.verify(SignatureBlock(2, 2, b""), data)


def test_verify_message_needs_a_signature() -> None:
    resp = decode_response(ResponseBuilder(Request(bytes(16)), 1).finish())
    assert not Verifier({}).verify_message(resp)


@pytest.mark.parametrize("key_id", [-1, 2**32, True])
def test_key_ids_are_u32(key_id: int) -> None:
    with pytest.raises(ValueError, match="key id"):
        HmacSigner(key_id, b"x" * 32)


def test_short_hmac_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        HmacSigner(1, b"short")


def _round_trip(signer: Signer, verifier: Verifier) -> None:
    builder = ResponseBuilder(Request(bytes(16), signature_request=True), 7, signer=signer)
    assert verifier.verify_message(decode_response(builder.finish()))


def test_generated_ed25519_files_load_and_interoperate(tmp_path: Path) -> None:
    priv, pub = tmp_path / "server.key", tmp_path / "server.pub"
    public = generate_ed25519(priv, pub)
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert priv.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    signer = load_signer(priv, 77)
    assert isinstance(signer, Ed25519Signer) and signer.key_id == 77
    loaded = load_verify_key(pub)
    assert isinstance(loaded, Ed25519PublicKey)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert loaded.public_bytes(*raw) == public.public_bytes(*raw)
    _round_trip(signer, Verifier({77: loaded}))
    _round_trip(signer, Verifier({77: load_verify_key(priv)}))  # a private PEM also gives the public key


def test_hmac_files_load(tmp_path: Path) -> None:
    path = tmp_path / "shared.key"
    secret = generate_hmac(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == f"hmac:{secret.hex()}\n"
    signer = load_signer(path, 5)
    assert isinstance(signer, HmacSigner)
    assert load_verify_key(path) == secret
    _round_trip(signer, Verifier({5: load_verify_key(path)}))


@pytest.mark.parametrize(
    "content, match",
    [
        (b"hmac:zz", "not hex"),
        (b"hmac:0011", "at least 16"),
        (b"\xff\xfe", "not ASCII"),
        (b"just text", "PEM"),
        (b"", "PEM"),
    ],
)
def test_bad_key_files_raise_key_file_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match) as info:
        load_signer(path, 1)
    assert str(path) in str(info.value)
    with pytest.raises(KeyFileError, match=match):
        load_verify_key(path)


def test_non_ed25519_pem_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with pytest.raises(KeyFileError, match="not Ed25519"):
        load_signer(path, 1)
    pub = tmp_path / "ec.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="not Ed25519"):
        load_verify_key(pub)


def test_encrypted_pem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "enc.key"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(KeyFileError):
        load_signer(path, 1)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"nope\.key"):
        load_signer(tmp_path / "nope.key", 1)
