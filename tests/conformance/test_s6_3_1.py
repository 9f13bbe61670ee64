"""Draft-01 §6.3.1 TLV Type Registry (clause table: test_draft01.py)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import pytest
from draft01_support import Ctx, open_probe, run, tlv, tlvs

from tsq import wire
from tsq.session.xleave import XLEAVE_REQUEST_KEY, XLEAVE_RESPONSE_KEY
from tsq.testing.certs import TestPki

NONCE = bytes(range(16))
T2 = (0xE000_0000_0000_0000).to_bytes(8, "big")
T3 = (0xE000_0000_0000_1000).to_bytes(8, "big")
# Unknown to this implementation: type 0 (reserved) and 4-246 (reserved for future use).
UNKNOWN = tlv(0, b"") + tlv(4, b"four") + tlv(100, bytes(30)) + tlv(246, b"\xff" * 255)
UNKNOWN_TYPES = [0, 4, 100, 246]


class TestS6_3_1:
    def test_types_4_to_246_are_not_assigned(self) -> None:
        """§6.3.1: "TLV Type values 4 through 246 are reserved for future use and MUST NOT be
        assigned without IETF review." A registry rule, not testable from an implementation's
        outside; what is checked is that this implementation assigns none of them itself."""
        assert not set(wire.TLV_NAMES) & set(range(4, 247))
        assert set(wire.TLV_NAMES) == {1, 2, 3, *range(247, 256)}

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_own_extension_uses_no_new_type(self, pki: TestPki, tsq_server: Callable[..., Any],
                                            mode: str) -> None:
        """§6.3.1: "Future extensions MUST use unique type values and follow the TLV format rules
        defined in this section." This binds future documents; checked here: this implementation's
        own extension (the interleaved T3, docs/quic.md) rides in Metadata pairs, so everything on
        the wire is a well-formed TLV of a Table 1 type."""
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    answers = []
                    for _ in range(3):
                        req = wire.encode_request(wire.Request(
                            nonce=os.urandom(16), metadata=((XLEAVE_REQUEST_KEY, "1"),)))
                        answers.append(await (p.ask_stream(req) if mode == "stream" else p.ask_datagram(req)))
                last = wire.decode_response(answers[-1])
                assert isinstance(last, wire.Response)
                assert [k for k, _ in last.metadata] == [XLEAVE_RESPONSE_KEY]
                for answer in answers:
                    assert {t for t, _ in tlvs(answer)} <= set(wire.TLV_NAMES)

            run(go())

    def test_codec_ignores_unknown_types(self) -> None:
        """§6.3.1: "Implementations MUST ignore unknown TLV types unless explicitly required by
        policy." Request and response with unknown TLVs (type 0 and 4-246) decode to what they
        would be without them; `unknown` keeps types 4-246 for inspection, nothing acts on them."""
        plain_req = tlv(1, NONCE) + tlv(250) + tlv(252)
        req = wire.decode_request(tlv(1, NONCE) + UNKNOWN + tlv(250) + tlv(252))
        assert dataclasses.replace(req, unknown=()) == wire.decode_request(plain_req)
        assert [u.type for u in req.unknown] == [4, 100, 246]
        plain_resp = tlv(1, NONCE) + tlv(2, T2) + tlv(3, T3) + tlv(250)
        resp = wire.decode_response(tlv(1, NONCE) + tlv(2, T2) + tlv(3, T3) + UNKNOWN + tlv(250))
        assert isinstance(resp, wire.Response)
        assert dataclasses.replace(resp, unknown=()) == wire.decode_response(plain_resp)

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_server_ignores_unknown_types(self, pki: TestPki, tsq_server: Callable[..., Any],
                                          mode: str) -> None:
        """§6.3.1: "Implementations MUST ignore unknown TLV types". Our server, over QUIC, answers
        a request carrying unknown TLVs exactly as it answers the same request without them."""
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    nonce = os.urandom(16)
                    data = tlv(1, nonce) + UNKNOWN + tlv(247)
                    answer = await (p.ask_stream(data) if mode == "stream" else p.ask_datagram(data))
                resp = wire.decode_response(answer)
                assert isinstance(resp, wire.Response) and resp.nonce == nonce
                assert [t for t, _ in tlvs(answer)][:3] == [1, 2, 3]

            run(go())
            assert srv.stats["errors_sent"] == 0 and srv.stats["dropped"] == 0

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_client_ignores_unknown_types(self, tsq_server: Callable[..., Any],
                                          tsq_client: Callable[..., Any], mode: str) -> None:
        """§6.3.1: "Implementations MUST ignore unknown TLV types". A server that adds unknown TLVs
        after T3 still gives our client a valid sample."""

        def with_unknown(ctx: Ctx) -> Any:
            at = wire.SEND_TS_OFFSET + 8
            return [ctx.reply(lambda t3: ctx.honest(t3)[:at] + UNKNOWN + ctx.honest(t3)[at:])]

        with tsq_server(with_unknown) as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                ex = await c.exchange(mode)
                assert ex.mode == mode and ex.delay_ns > 0
                assert c.last_response is not None
                assert [u.type for u in c.last_response.unknown] == [4, 100, 246]
                assert c.discarded_responses == 0
                await c.close()

            run(go())

    def test_nonce_and_both_timestamps_are_required(self) -> None:
        """§6.3.1 Table 1: Nonce (1), Receive Timestamp (2) and Send Timestamp (3) are "Required:
        Yes". A request without a Nonce, and a response without any one of the three, are
        rejected."""
        with pytest.raises(wire.WireError, match="Nonce"):
            wire.decode_request(tlv(250) + tlv(252))
        for missing in (1, 2, 3):
            parts = {1: tlv(1, NONCE), 2: tlv(2, T2), 3: tlv(3, T3)}
            del parts[missing]
            with pytest.raises(wire.WireError):
                wire.decode_response(b"".join(parts.values()) + tlv(250))
