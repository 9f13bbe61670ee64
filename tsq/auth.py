"""Signature Block signing and verification (draft §8): Ed25519 and HMAC-SHA256.

The signed data is the exact contiguous bytes of every TLV before the Signature Block, as they
appear on the wire (`Response.signed_data` / `ErrorResponse.signed_data` after decoding).

Signing and verifying are sans-IO. The key-file helpers at the bottom are the only I/O here; the
file formats are documented in docs/wire.md:
- Ed25519 private key: PEM, PKCS#8, unencrypted (`-----BEGIN PRIVATE KEY-----`).
- Ed25519 public key: PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
- HMAC-SHA256 secret: one line `hmac:<hex>` (at least 16 bytes of secret), used for both sides.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Mapping, Optional, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tsq.wire import ErrorResponse, Response, SignatureBlock, Signer

__all__ = [
    "ALG_ED25519",
    "ALG_HMAC_SHA256",
    "Ed25519Signer",
    "HmacSigner",
    "KeyFileError",
    "Signer",
    "Verifier",
    "VerifyKey",
    "generate_ed25519",
    "generate_hmac",
    "load_signer",
    "load_verify_key",
    "parse_signer",
    "parse_verify_key",
]

ALG_ED25519 = 1
ALG_HMAC_SHA256 = 2
ED25519_SIGNATURE_LENGTH = 64
HMAC_SHA256_LENGTH = 32
MIN_HMAC_SECRET = 16
HMAC_PREFIX = "hmac:"

# What a Verifier holds per key id: an Ed25519 public key, or an HMAC secret.
VerifyKey = Union[Ed25519PublicKey, bytes]


class KeyFileError(ValueError):
    """A key file or key text is unreadable or not in a supported format; names the source."""


def _key_id(key_id: int) -> int:
    if not isinstance(key_id, int) or isinstance(key_id, bool) or not 0 <= key_id < 1 << 32:
        raise ValueError(f"key id must be an integer in [0, 2**32), got {key_id!r}")
    return key_id


class Ed25519Signer:
    """Ed25519 (RFC 8032) signer; `private_key` is a key object or the 32-byte raw seed."""

    algorithm = ALG_ED25519
    signature_length = ED25519_SIGNATURE_LENGTH

    def __init__(self, key_id: int, private_key: Union[Ed25519PrivateKey, bytes]) -> None:
        self.key_id = _key_id(key_id)
        if isinstance(private_key, (bytes, bytearray)):
            if len(private_key) != 32:
                raise ValueError("an Ed25519 raw private key is 32 bytes")
            private_key = Ed25519PrivateKey.from_private_bytes(bytes(private_key))
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("private_key must be an Ed25519PrivateKey or 32 raw bytes")
        self._key = private_key

    def public_key(self) -> Ed25519PublicKey:
        """The matching public key, for a Verifier."""
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data))


class HmacSigner:
    """HMAC-SHA256 (RFC 2104) signer with a shared secret of at least 16 bytes."""

    algorithm = ALG_HMAC_SHA256
    signature_length = HMAC_SHA256_LENGTH

    def __init__(self, key_id: int, secret: bytes) -> None:
        self.key_id = _key_id(key_id)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < MIN_HMAC_SECRET:
            raise ValueError(f"an HMAC secret must be at least {MIN_HMAC_SECRET} bytes")
        self._secret = bytes(secret)

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, bytes(data), hashlib.sha256).digest()


class Verifier:
    """Checks Signature Blocks against keys indexed by key id."""

    def __init__(self, keys: Mapping[int, VerifyKey]) -> None:
        self._keys = dict(keys)

    def verify(self, block: SignatureBlock, data: bytes) -> bool:
        """True only if `block` is a valid signature of `data` by the key its key id names.

        Unknown key id, or an algorithm that does not match the key's type: False.
        """
        key = self._keys.get(block.key_id)
        if key is None:
            return False
        if isinstance(key, Ed25519PublicKey):
            if block.algorithm != ALG_ED25519 or len(block.signature) != ED25519_SIGNATURE_LENGTH:
                return False
            try:
                key.verify(bytes(block.signature), bytes(data))
            except InvalidSignature:
                return False
            return True
        if block.algorithm != ALG_HMAC_SHA256:
            return False
        expected = hmac.new(key, bytes(data), hashlib.sha256).digest()
        return hmac.compare_digest(expected, bytes(block.signature))

    def verify_message(self, message: Union[Response, ErrorResponse]) -> bool:
        """True if the decoded message carries a Signature Block that verifies."""
        if message.signature is None:
            return False
        return self.verify(message.signature, message.signed_data)


# ---------------------------------------------------------------------------------------------
# Key files (the only I/O in this module)


def _parse_hmac(text: str, source: str) -> bytes:
    try:
        secret = bytes.fromhex(text[len(HMAC_PREFIX) :].strip())
    except ValueError:
        raise KeyFileError(f"{source}: HMAC secret after '{HMAC_PREFIX}' is not hex") from None
    if len(secret) < MIN_HMAC_SECRET:
        raise KeyFileError(f"{source}: HMAC secret must be at least {MIN_HMAC_SECRET} bytes")
    return secret


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(f"{source}: key file is not ASCII text (PEM or 'hmac:<hex>')") from None


def parse_signer(data: bytes, key_id: int, source: str = "key") -> Union[Ed25519Signer, HmacSigner]:
    """A signer from key-file contents: PEM Ed25519 private key, or `hmac:<hex>`."""
    text = _text(data, source)
    if text.startswith(HMAC_PREFIX):
        return HmacSigner(key_id, _parse_hmac(text, source))
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: not an unencrypted PEM private key or 'hmac:<hex>' ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{source}: PEM private key is not Ed25519")
    return Ed25519Signer(key_id, key)


def parse_verify_key(data: bytes, source: str = "key") -> VerifyKey:
    """A verify key from file contents: PEM Ed25519 public (or private) key, or `hmac:<hex>`."""
    text = _text(data, source)
    if text.startswith(HMAC_PREFIX):
        return _parse_hmac(text, source)
    pem = text.encode("ascii")
    try:
        if "PRIVATE KEY" in text:
            private = serialization.load_pem_private_key(pem, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
            raise KeyFileError(f"{source}: PEM private key is not Ed25519")
        public = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: not a PEM Ed25519 key or 'hmac:<hex>' ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{source}: PEM public key is not Ed25519")
    return public


def _read(path: Union[str, os.PathLike[str]]) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 16)
    except OSError as exc:
        raise KeyFileError(f"{os.fspath(path)}: {exc.strerror or exc}") from None


def load_signer(path: Union[str, os.PathLike[str]], key_id: int) -> Union[Ed25519Signer, HmacSigner]:
    """Load a signing key file (PEM Ed25519 private key, or `hmac:<hex>`); KeyFileError if bad."""
    return parse_signer(_read(path), key_id, os.fspath(path))


def load_verify_key(path: Union[str, os.PathLike[str]]) -> VerifyKey:
    """Load a verification key file (PEM Ed25519 public key, or `hmac:<hex>`); KeyFileError if bad."""
    return parse_verify_key(_read(path), os.fspath(path))


def _write_private(path: Union[str, os.PathLike[str]], data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def generate_ed25519(path_private: Union[str, os.PathLike[str]],
                     path_public: Optional[Union[str, os.PathLike[str]]] = None) -> Ed25519PublicKey:
    """Write a new Ed25519 key pair (private PEM mode 0600, public PEM); returns the public key."""
    key = Ed25519PrivateKey.generate()
    _write_private(path_private, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = key.public_key()
    if path_public is not None:
        with open(path_public, "wb") as fh:
            fh.write(public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return public


def generate_hmac(path: Union[str, os.PathLike[str]], size: int = 32) -> bytes:
    """Write a new random HMAC secret as `hmac:<hex>` (mode 0600); returns the secret."""
    secret = os.urandom(max(size, MIN_HMAC_SECRET))
    _write_private(path, f"{HMAC_PREFIX}{secret.hex()}\n".encode("ascii"))
    return secret
