"""TLS trust for TSQ over QUIC: ALPN, CA / SPKI-pin / insecure client configs, certificate generation."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import ssl
from typing import Optional, Sequence

from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tsq.session.alpn import ALPN_LEGACY, ALPN_TSQ, offered

__all__ = ["ALPN_LEGACY", "ALPN_TSQ", "DATAGRAM_FRAME_SIZE", "TrustError", "check_pin",
           "client_configuration", "generate_self_signed", "load_certificate", "normalise_pin",
           "san_entries", "server_configuration", "spki_pin", "spki_pin_pem"]
DATAGRAM_FRAME_SIZE = 1200  # RFC 9221 max_datagram_frame_size we advertise


class TrustError(Exception):
    """The server's certificate does not match the configured trust (pin, CA)."""


def spki_pin(cert: x509.Certificate) -> str:
    """The `sha256/BASE64` pin of a certificate's SubjectPublicKeyInfo (as in HPKP / curl)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def spki_pin_pem(cert_pem: bytes) -> str:
    """`spki_pin` of a PEM-encoded certificate."""
    return spki_pin(x509.load_pem_x509_certificate(cert_pem))


def normalise_pin(pin: str) -> str:
    """Accept `sha256/BASE64` or bare BASE64; raise ValueError for anything else."""
    value = pin[len("sha256/") :] if pin.startswith("sha256/") else pin
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ValueError(f"pin {pin!r} is not sha256/BASE64") from exc
    if len(raw) != 32:
        raise ValueError(f"pin {pin!r} is not a SHA-256 digest")
    return "sha256/" + base64.b64encode(raw).decode("ascii")


def check_pin(cert: Optional[x509.Certificate], pin: str) -> None:
    """Raise TrustError unless `cert`'s SPKI matches `pin`."""
    if cert is None:
        raise TrustError("server presented no certificate")
    got = spki_pin(cert)
    if got != normalise_pin(pin):
        raise TrustError(f"certificate pin mismatch: server has {got}")


def generate_self_signed(
    names: Sequence[str] = ("localhost",), days: int = 30
) -> tuple[bytes, bytes]:
    """An ephemeral self-signed P-256 certificate for `names` (DNS names or IPs): (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "tsq")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert), _key_pem(key)


def san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def server_configuration(
    cert_pem: bytes, key_pem: bytes, *, datagrams: bool = True, legacy_alpn: bool = False,
    idle_timeout: float = 300.0, max_stream_data: Optional[int] = None, max_data: Optional[int] = None,
) -> QuicConfiguration:
    """QUIC server configuration: ALPN `tsq` (and `tsq/1` when asked), RFC 9221 datagrams unless
    disabled; receive windows (per stream, per connection) when given, else aioquic's 1 MB."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=offered(legacy_alpn),
        max_datagram_frame_size=DATAGRAM_FRAME_SIZE if datagrams else None,
        idle_timeout=idle_timeout,
    )
    if max_stream_data is not None:
        config.max_stream_data = max_stream_data
    if max_data is not None:
        config.max_data = max_data
    certs = x509.load_pem_x509_certificates(cert_pem)
    config.certificate = certs[0]
    config.certificate_chain = certs[1:]
    config.private_key = serialization.load_pem_private_key(key_pem, password=None)
    return config


def client_configuration(
    server_name: str, *, ca: Optional[str] = None, pin: Optional[str] = None,
    insecure: bool = False, datagrams: bool = True, alpn: Sequence[str] = (ALPN_TSQ,),
    idle_timeout: float = 300.0,
) -> QuicConfiguration:
    """QUIC client configuration: system CAs by default, `ca` file, or pin/insecure (no CA check).

    With a pin the chain is not checked against CAs: the pin itself is the trust anchor and is
    checked after the handshake (`check_pin`).
    """
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(alpn),
        server_name=server_name,
        max_datagram_frame_size=DATAGRAM_FRAME_SIZE if datagrams else None,
        idle_timeout=idle_timeout,
    )
    if pin is not None or insecure:
        config.verify_mode = ssl.CERT_NONE
    else:
        config.verify_mode = ssl.CERT_REQUIRED
        if ca is not None:
            config.load_verify_locations(cafile=ca)
    return config


def load_certificate(path: str) -> x509.Certificate:
    """Read a PEM certificate (the first in the file)."""
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())
