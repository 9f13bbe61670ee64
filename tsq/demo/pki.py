"""A throw-away PKI (the demo, tests, benchmarks): a CA, a server certificate it signs, and a stranger."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tsq.quic.trust import san_entries, spki_pin


@dataclass(frozen=True)
class DemoPki:
    """Paths of PEM files written by `make_pki`, and the server certificate's SPKI pin."""

    __test__ = False  # not a pytest class (tests import it as TestPki)

    ca_cert: str          # trust anchor for --ca
    server_cert: str      # leaf for the names given, signed by the CA
    server_key: str
    other_ca_cert: str    # an unrelated CA: trusting it must make the handshake fail
    server_pin: str       # sha256/BASE64 of the leaf's SPKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def make_pki(directory: str, names: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> DemoPki:
    """Write a CA, a server cert/key for `names` signed by it, and an unrelated CA into `directory`."""
    ca, ca_key = _ca("TSQ test CA")
    other, _ = _ca("Someone else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return DemoPki(
        ca_cert=_write(os.path.join(directory, "ca.pem"), ca.public_bytes(pem)),
        server_cert=_write(os.path.join(directory, "server.pem"), leaf.public_bytes(pem)),
        server_key=_write(
            os.path.join(directory, "server.key"),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
        other_ca_cert=_write(os.path.join(directory, "other-ca.pem"), other.public_bytes(pem)),
        server_pin=spki_pin(leaf),
    )
