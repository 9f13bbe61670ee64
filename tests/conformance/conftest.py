"""Fixtures of the draft-01 conformance suite (the pieces are in draft01_support.py)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator, Optional

import pytest

from tsq.quic.client import TsqClient
from tsq.testing.certs import TestPki, make_pki

# The section modules import their helpers from draft01_support (pytest runs in importlib mode,
# which does not put test directories on sys.path).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from draft01_support import (
    ClientHarness,
    ScriptedThread,
    ScriptFn,
    server_config,
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(str(tmp_path_factory.mktemp("conformance-pki")))


@pytest.fixture
def tsq_server(pki: TestPki) -> Callable[..., contextlib.AbstractContextManager[ScriptedThread]]:
    """`with tsq_server(script=None, **ServerConfig fields) as srv:` a real server on loopback."""

    @contextlib.contextmanager
    def start(script: Optional[ScriptFn] = None, **kw: Any) -> Iterator[ScriptedThread]:
        srv = ScriptedThread(server_config(pki, **kw), script)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()

    return start


@pytest.fixture
def tsq_client(pki: TestPki) -> Callable[..., TsqClient]:
    """`tsq_client(port, **TsqClient options)`: our client, trusting the test CA."""

    def make(port: int, **kw: Any) -> TsqClient:
        kw.setdefault("ca", pki.ca_cert)
        kw.setdefault("server_name", "localhost")
        return TsqClient(f"127.0.0.1:{port}", **kw)

    return make


@pytest.fixture
def harness() -> Callable[..., ClientHarness]:
    """`harness(alpn="tsq", peer_datagrams=True, **ClientOptions)`: a sans-IO client session."""

    def make(alpn: Optional[str] = "tsq", peer_datagrams: bool = True, **options: Any) -> ClientHarness:
        return ClientHarness(options, alpn=alpn, peer_datagrams=peer_datagrams)

    return make
