"""Fixtures shared by the QUIC tests: one demo PKI and one loopback server per module."""

from __future__ import annotations

from typing import Iterator

import pytest

from tsq.quic.server import ServerConfig, ServerThread, load_pem_pair
from tsq.testing.certs import TestPki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def server(pki: TestPki) -> Iterator[ServerThread]:
    """A server on an ephemeral loopback port with the PKI's certificate and default settings."""
    cert, key = load_pem_pair(pki.server_cert, pki.server_key)
    with ServerThread(ServerConfig(cert_pem=cert, key_pem=key, host="127.0.0.1", port=0)) as srv:
        yield srv
