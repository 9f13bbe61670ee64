"""tsq/quic/_deferred_tls.py: pyOpenSSL, service_identity and certifi stay unloaded until a client
checks a chain, and the check, once they load, accepts and refuses exactly as aioquic's own.

Each case is a fresh interpreter (the deferral happens at the first import of aioquic.tls, which in
this test process has long happened), talking to a real server over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict

import pytest

from tsq.quic.server import ServerThread
from tsq.quic.trust import spki_pin_pem
from tsq.testing.certs import TestPki
from tsq.testing.daemon import subprocess_env

DEFERRED = ("OpenSSL", "service_identity", "certifi")

CLIENT = """
import asyncio, json, sys
from tsq.quic.client import TsqClient, TsqError
loaded_before = [m for m in {deferred!r} if m in sys.modules]
async def go():
    c = TsqClient({address!r}, **{kwargs!r})
    try:
        await c.exchange()
        return "ok"
    except TsqError as exc:
        return "refused: " + str(exc)
    finally:
        await c.close()
outcome = asyncio.run(go())
print(json.dumps({{"before": loaded_before, "after": [m for m in {deferred!r} if m in sys.modules],
                  "outcome": outcome}}))
"""


def fresh_client(server: ServerThread, **kwargs: Any) -> Dict[str, Any]:
    code = CLIENT.format(deferred=DEFERRED, address=f"127.0.0.1:{server.port}", kwargs=kwargs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=subprocess_env(), cwd="/")
    assert out.returncode == 0, out.stderr
    result: Dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_pinned_client_never_loads_them(pki: TestPki, server: ServerThread) -> None:
    with open(pki.server_cert, "rb") as f:
        result = fresh_client(server, pin=spki_pin_pem(f.read()))
    assert result == {"before": [], "after": [], "outcome": "ok"}


def test_a_ca_check_loads_them_and_accepts_the_right_name(pki: TestPki, server: ServerThread) -> None:
    result = fresh_client(server, ca=pki.ca_cert, server_name="localhost")
    assert result["before"] == []
    assert result["outcome"] == "ok"
    assert set(result["after"]) == {"OpenSSL", "service_identity"}   # certifi: only without a CA


@pytest.mark.parametrize("kwargs, reason", [
    ({"server_name": "time.example.org"}, "doesn't match"),        # service_identity, deferred
    ({"other_ca": True, "server_name": "localhost"}, "unable to get local issuer certificate"),
    ({"server_name": "localhost"}, "unable to get local issuer certificate"),  # certifi's store
])
def test_a_ca_check_refuses_as_aioquic_does(pki: TestPki, server: ServerThread,
                                            kwargs: Dict[str, Any], reason: str) -> None:
    if kwargs.pop("other_ca", False):
        kwargs["ca"] = pki.other_ca_cert
    elif "time.example.org" in kwargs.values():
        kwargs["ca"] = pki.ca_cert
    result = fresh_client(server, **kwargs)
    assert result["before"] == []
    assert result["outcome"].startswith("refused: ") and reason in result["outcome"], result
