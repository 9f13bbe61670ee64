"""Draft-01 §8 Signature Format and Verification (clause table: test_draft01.py).

Signatures are checked here with `cryptography` and `hmac` directly (draft01_support), not only with
tsq.auth, so the layout and the signed bytes are the draft's and not just self-consistent.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict

import pytest
from draft01_support import (
    KEY_ID,
    SIGNER_KINDS,
    Ctx,
    make_signer,
    make_verifier,
    open_probe,
    run,
    signature_at,
    tlv,
    verify_independently,
)

from tsq import wire
from tsq.auth import Ed25519Signer, HmacSigner
from tsq.session.errors import TsqInvalidResponse
from tsq.testing.certs import TestPki

SIG_LENGTH = {"ed25519": 64, "hmac": 32}


def signed_request(precision: bool = False) -> bytes:
    req = wire.Request(nonce=os.urandom(16), signature_request=True, precision=precision, metadata_query=True)
    return wire.encode_request(wire.pad_request(req) if precision else req)


async def signed_answers(pki: TestPki, port: int) -> Dict[str, bytes]:
    async with open_probe(pki, port) as p:
        return {"stream": await p.ask_stream(signed_request()),
                "datagram": await p.ask_datagram(signed_request()),
                "stream, padded": await p.ask_stream(signed_request(precision=True)),
                "datagram, padded": await p.ask_datagram(signed_request(precision=True))}


def forge(kind: str, how: str, data: bytes) -> bytes:
    """A signed answer made non-compliant in one way."""
    at, block = signature_at(data)
    body, head = data[:at], data[at:at + 7]          # head: type, length, algorithm, key id
    other_key = Ed25519Signer(KEY_ID, bytes(32)) if kind == "ed25519" else HmacSigner(KEY_ID, bytes(32))
    forged = {
        "missing": lambda: body,
        "other key": lambda: body + wire.signature_tlv(other_key, body),
        "other key id": lambda: body + wire.signature_tlv(make_signer(kind, KEY_ID + 1), body),
        "other algorithm": lambda: body + head[:2] + bytes((3 - block[0],)) + data[at + 3:],
        "partial coverage": lambda: body + wire.signature_tlv(make_signer(kind), body[:18]),
        "covers itself": lambda: body + wire.signature_tlv(make_signer(kind), data),
        "not last": lambda: data + tlv(254, bytes(2)),
        "bad length": lambda: body + head + (len(block) - 8).to_bytes(2, "big") + block[7:],
    }
    return forged[how]()


class TestS8:
    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_signature_block_is_included_and_laid_out(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                      kind: str) -> None:
        """§8: "When enabled, the TSQ Response MUST include a TLV extension of type 255 (0xFF),
        known as the Signature Block." with "Signature Algorithm ID (1 byte)", "Key ID (4 bytes)",
        "Signature Length (2 bytes)", "Signature Bytes" and 0x01 = Ed25519, 0x02 = HMAC-SHA256."""
        with tsq_server(signer=make_signer(kind)) as srv:
            for how, answer in run(signed_answers(pki, srv.port)).items():
                at, block = signature_at(answer)
                assert answer[at] == 0xFF and answer[at + 1] == len(block), how
                assert block[0] == {"ed25519": 1, "hmac": 2}[kind]
                assert block[1:5] == bytes((1, 2, 3, 4))            # KEY_ID, big-endian
                assert int.from_bytes(block[5:7], "big") == SIG_LENGTH[kind] == len(block) - 7

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_signed_data_is_every_byte_before_the_block(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                        kind: str) -> None:
        """§8: "The data to be signed MUST consist of the exact, contiguous byte sequence of all
        TLVs in the message *preceding* the Signature Block TLV (Type 255), in the order they
        appear on the wire." The signature verifies over exactly those bytes, the codec's
        `signed_data` is exactly them, and changing any one of them breaks it."""
        with tsq_server(signer=make_signer(kind), metadata=(("site", "lab"),)) as srv:
            answers = run(signed_answers(pki, srv.port))
        for how, answer in answers.items():
            at, block = signature_at(answer)
            assert verify_independently(kind, answer[:at], block), how
            decoded = wire.decode_response(answer)
            assert isinstance(decoded, wire.Response) and decoded.signed_data == answer[:at]
            for i in range(0, at, 7):
                changed = bytearray(answer[:at])
                changed[i] ^= 0x01
                assert not verify_independently(kind, bytes(changed), block), (how, i)

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_block_is_not_in_the_signed_data(self, pki: TestPki, tsq_server: Callable[..., Any],
                                             kind: str) -> None:
        """§8: "The Signature Block itself MUST NOT be included in the signed data.\""""
        with tsq_server(signer=make_signer(kind)) as srv:
            answers = run(signed_answers(pki, srv.port))
        for answer in answers.values():
            at, block = signature_at(answer)
            assert verify_independently(kind, answer[:at], block)
            for wider in (answer[:at + 2], answer[:at + 9], answer):
                assert not verify_independently(kind, wider, block)

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_required_but_missing_is_unauthenticated(self, harness: Callable[..., Any], mode: str) -> None:
        """§8: "Clients that require signatures but do not receive them MUST treat the response as
        unauthenticated." (Our client then discards it: no sample.)"""
        h = harness(require_signature=True, verifier=make_verifier("ed25519"))
        job = h.start(mode)
        sent = h.sent()
        data = h.honest(sent)
        h.reply(sent, data)
        done = h.result(job)
        assert done.exchange is None and "unsigned" in str(done.error)

    @pytest.mark.parametrize("how", ["missing", "other key", "other key id", "other algorithm",
                                     "partial coverage", "covers itself", "not last", "bad length"])
    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_noncompliant_signatures_are_rejected(self, tsq_server: Callable[..., Any],
                                                  tsq_client: Callable[..., Any], kind: str,
                                                  how: str) -> None:
        """§8: "The presence of the Signature Request TLV (Type 252) in the TSQ Request mandates the
        inclusion of a valid Signature Block TLV in the response. Failure to comply MUST result in
        rejection of the response by the client." Over QUIC, in both modes, a server that gets the
        Signature Block wrong in any of these ways gives no sample; each is counted and named."""

        def script(ctx: Ctx) -> Any:
            return [ctx.reply(lambda t3: forge(kind, how, ctx.honest(t3)))]

        with tsq_server(script, signer=make_signer(kind)) as srv:
            async def go() -> None:
                c = tsq_client(srv.port, require_signature=True, verifier=make_verifier(kind), timeout_s=0.5)
                for mode in ("stream", "datagram"):
                    before = c.discarded_responses
                    with pytest.raises(TsqInvalidResponse):
                        await c.exchange(mode)
                    assert c.discarded_responses > before and c.name in c.discards[-1]
                await c.close()

            run(go())
