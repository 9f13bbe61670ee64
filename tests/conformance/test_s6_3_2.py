"""Draft-01 §6.3.2 TSQ Message Formats (clause table: test_draft01.py).

One class per part of the section: message structure, Signature Request, optional TLVs, Metadata
Query, Error, Time Source Info, Metadata, Padding, Signature Block.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Any, Callable, List, Tuple

import pytest
from draft01_support import (
    KEY_ID,
    SIGNER_KINDS,
    ClientHarness,
    make_signer,
    make_verifier,
    open_probe,
    run,
    signature_at,
    tlv,
    tlvs,
    verify_independently,
)

from tsq import wire
from tsq.auth import Ed25519Signer
from tsq.session.errors import TsqServerError
from tsq.testing.certs import TestPki

NONCE = bytes(range(16))
T2 = (0xE000_0000_0000_0000).to_bytes(8, "big")
T3 = (0xE000_0000_0000_1000).to_bytes(8, "big")
HEAD = tlv(1, NONCE) + tlv(2, T2) + tlv(3, T3)
FULL = dict(metadata=(("site", "lab"), ("region", "eu")), time_source=wire.TimeSourceInfo(1, 1, "gps"),
            clock_quality=wire.ClockQuality(1, 2, 3, "gpsdo"))
Harness = Callable[..., ClientHarness]


def request(**kw: Any) -> bytes:
    """A request from the codec; precision requests are padded to the client's size."""
    req = wire.Request(nonce=os.urandom(16), **kw)
    return wire.encode_request(wire.pad_request(req) if req.precision else req)


async def ask(p: Any, data: bytes, mode: str) -> bytes:
    return bytes(await (p.ask_stream(data) if mode == "stream" else p.ask_datagram(data)))


def pairs_on_wire(message: bytes) -> List[Tuple[bytes, bytes]]:
    """The Metadata pairs of a message as raw bytes, in wire order (parsed here, not by tsq.wire)."""
    out = []
    for t, value in tlvs(message):
        if t != wire.METADATA:
            continue
        pos = 0
        while pos < len(value):
            key = value[pos + 1:pos + 1 + value[pos]]
            pos += 1 + value[pos]
            val = value[pos + 1:pos + 1 + value[pos]]
            pos += 1 + value[pos]
            out.append((key, val))
    return out


class TestS6_3_2Structure:
    def test_datagram_messages_begin_with_the_nonce(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                    harness: Harness) -> None:
        """§6.3.2: "In Datagram Mode, all TLVs MUST still appear in a well-defined order, beginning
        with the Nonce (Type 1)." The codec refuses other orders; our server drops such a datagram
        (and answers the same TLVs Nonce first); our client's datagram requests begin with the Nonce
        and it discards a datagram response that does not."""
        with pytest.raises(wire.WireError, match="begin with a Nonce"):
            wire.decode_request(tlv(250) + tlv(1, NONCE))
        with pytest.raises(wire.WireError, match="begin with a Nonce"):
            wire.decode_response(tlv(2, T2) + tlv(1, NONCE) + tlv(3, T3))
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    nonce = os.urandom(16)
                    assert await p.datagrams_after(tlv(247) + tlv(1, nonce)) == []
                    answer = await p.ask_datagram(tlv(1, nonce) + tlv(247))
                    assert tlvs(answer)[0] == (1, nonce)

            run(go())
            assert srv.stats["dropped"] == 1
        h = harness()
        job = h.start("datagram")
        sent = h.sent()
        assert sent.data[:2] == bytes((1, 16))
        good = h.honest(sent)
        h.datagram(good[18:38] + good[:18] + good[38:])   # T2, Nonce, T3: same bytes, wrong order
        assert len(h.discards) == 1 and job not in h.done
        h.datagram(good)
        assert h.result(job).exchange is not None

    def test_a_datagram_is_one_message(self, pki: TestPki, tsq_server: Callable[..., Any],
                                       harness: Harness) -> None:
        """§6.3.2: "implementations MUST treat the entire datagram payload as a single TSQ
        message." Two requests in one datagram are one malformed message to our server (dropped,
        not answered twice); a datagram holding two responses is one malformed response to our
        client (rejected, not a sample)."""
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    assert await p.datagrams_after(request() + request()) == []

            run(go())
            assert srv.stats["dropped"] == 1
        h = harness()
        job = h.start("datagram")
        sent = h.sent()
        h.datagram(h.honest(sent) * 2)
        done = h.result(job)
        assert done.exchange is None and "malformed" in str(done.error)
        assert len(h.discards) == 1

    def test_no_partial_tlvs(self, pki: TestPki, tsq_server: Callable[..., Any], harness: Harness) -> None:
        """§6.3.2: "Partial or fragmented TLVs MUST NOT be used." The codec refuses a message that
        ends inside a TLV; our server drops such a datagram and sends only whole TLVs; our client
        rejects a datagram response that ends inside a TLV."""
        for cut in (wire.decode_request, wire.decode_response):
            with pytest.raises(wire.WireError, match=r"truncated|remain"):
                cut(HEAD + b"\xfd\x05ab")
        with tsq_server(**FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    assert await p.datagrams_after(tlv(1, os.urandom(16)) + b"\xfd\x09site") == []
                    for req in (request(), request(precision=True, metadata_query=True)):
                        tlvs(await p.ask_datagram(req))   # raises on any partial TLV

            run(go())
            assert srv.stats["dropped"] == 1
        h = harness()
        job = h.start("datagram")
        sent = h.sent()
        h.datagram(h.honest(sent, precision=False) + b"\xfb\x09ab")
        assert h.result(job).exchange is None and len(h.discards) == 1

    def test_tlvs_are_processed_in_wire_order(self) -> None:
        """§6.3.2: "TLVs MUST be processed sequentially". What a TLV means depends on its place
        (T2 is TLV #2, Padding only at the end, the Signature Block covers what precedes it);
        repeated Metadata and unknown TLVs are kept in wire order; of two defects the first in wire
        order is the one reported."""
        msg = HEAD + tlv(200, b"x") + tlv(253, b"\x01b\x00") + tlv(100, b"y") + tlv(253, b"\x01a\x00")
        resp = wire.decode_response(msg)
        assert isinstance(resp, wire.Response)
        assert resp.metadata == (("b", ""), ("a", "")) and [u.type for u in resp.unknown] == [200, 100]
        two_defects = HEAD + tlv(248, b"\x01\x07\x00\x00\x00\x00") + tlv(254, b"\x01")
        with pytest.raises(wire.WireError, match="offset 38: reserved byte"):
            wire.decode_response(two_defects)

    def test_unknown_types_are_ignored(self) -> None:
        """§6.3.2: "unknown TLV types MUST be ignored unless policy dictates otherwise." The same
        rule as §6.3.1's, checked on the codec, server and client there
        (test_s6_3_1.py::TestS6_3_1::test_*_ignores_unknown_types); here: an unknown TLV between
        the required ones and the Signature Block changes nothing but the signed bytes."""
        signer = make_signer("ed25519")
        body = HEAD + tlv(99, b"future") + tlv(250)
        resp = wire.decode_response(body + wire.signature_tlv(signer, body))
        assert isinstance(resp, wire.Response)
        assert resp.precision and resp.signed_data == body
        assert make_verifier("ed25519").verify_message(resp)


class TestS6_3_2SignatureRequest:
    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_signing_server_signs_validly(
            self, pki: TestPki, tsq_server: Callable[..., Any], kind: str, mode: str) -> None:
        """§6.3.2 Signature Request: "If supported, the server MUST include a valid Signature Block
        TLV (Type 255) in the response." Verified here with `cryptography`/`hmac` directly, not
        with tsq.auth."""
        with tsq_server(signer=make_signer(kind), **FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for req in (request(signature_request=True),
                                request(signature_request=True, precision=True, metadata_query=True)):
                        answer = await ask(p, req, mode)
                        at, block = signature_at(answer)
                        assert verify_independently(kind, answer[:at], block)

            run(go())


class TestS6_3_2OptionalTlvs:
    def test_optional_tlvs_follow_the_required_ones(self, pki: TestPki,
                                                    tsq_server: Callable[..., Any]) -> None:
        """§6.3.2: "These TLVs MUST follow standard TLV structure and be included after the required
        fields in the message." The codec refuses an optional TLV before T2/T3; every response of
        our server, with every optional TLV it has, starts Nonce, T2, T3 and is well-formed."""
        for early in (tlv(250), tlv(251, b"\x01\x01"), tlv(253, b"")):
            with pytest.raises(wire.WireError, match=r"Receive Timestamp|Send Timestamp"):
                wire.decode_response(tlv(1, NONCE) + early + tlv(2, T2) + tlv(3, T3))
        with tsq_server(signer=make_signer("hmac"), **FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for mode in ("stream", "datagram"):
                        req = request(precision=True, metadata_query=True, signature_request=True)
                        types = [t for t, _ in tlvs(await ask(p, req, mode))]
                        assert types[:3] == [1, 2, 3]
                        assert {248, 250, 251, 253, 254, 255} <= set(types[3:])

            run(go())


class TestS6_3_2MetadataQuery:
    def test_metadata_query_is_empty_and_request_only(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                      harness: Harness) -> None:
        """§6.3.2: "The Metadata Query Request TLV contains no value bytes and MUST appear only in
        TSQ Requests." The codec refuses it in a response and with a value; our client sends it
        empty; our server never sends it."""
        with pytest.raises(wire.WireError, match="not allowed in a response"):
            wire.decode_response(HEAD + tlv(247))
        with pytest.raises(wire.WireError, match="must be 0 bytes"):
            wire.decode_request(tlv(1, NONCE) + tlv(247, b"x"))
        h = harness()
        h.start("stream")
        assert (247, b"") in tlvs(h.sent().data)
        with tsq_server(**FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for mode in ("stream", "datagram"):
                        answer = await ask(p, request(metadata_query=True, precision=True), mode)
                        types = [t for t, _ in tlvs(answer)]
                        assert 253 in types and 247 not in types

            run(go())


class TestS6_3_2Error:
    def test_error_appears_alone(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§6.3.2 Error: "This TLV MUST appear alone in the response, without timestamps or other
        TLVs." Every Error our server sends on a stream is one TLV and nothing else."""
        assert [t for t, _ in tlvs(wire.encode_error(1, "x"))] == [249]
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for junk in (b"", b"\x01", tlv(2, T2), request(signature_request=True)):
                        assert [t for t, _ in tlvs(await p.ask_stream(junk))] == [249]

            run(go())

    def test_error_reserved_byte_is_zero(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§6.3.2 Error: "Reserved (1 byte): MUST be set to zero." On our server's Errors, and the
        codec refuses a non-zero one."""
        with pytest.raises(wire.WireError, match="reserved"):
            wire.decode_response(tlv(249, b"\x01\x01oops"))
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    answer = await p.ask_stream(b"\xff\xff")
                    assert answer[0] == 249 and answer[2] == 1 and answer[3] == 0

            run(go())

    def test_error_reason_is_at_most_255_bytes(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§6.3.2 Error: "The reason phrase MUST NOT exceed 255 bytes." `encode_error` cuts a long
        reason (to 253 bytes, what the 1-byte TLV length leaves); our server's reasons fit."""
        for reason in ("x" * 1000, "é" * 300):
            err = wire.decode_response(wire.encode_error(1, reason))
            assert isinstance(err, wire.ErrorResponse) and len(err.reason.encode()) <= 253
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    # The last is too long. It does not start with the Nonce, so none of its
                    # prefixes is a whole request: with the Nonce first, a packet boundary on a TLV
                    # boundary would complete it early (docs/wire.md "Stream framing") and be answered.
                    for junk in (os.urandom(300), tlv(1, NONCE) + tlv(253, b"\x02\xff\xfe\x00"),
                                 tlv(200, bytes(255)) * 20 + tlv(1, NONCE)):
                        err = wire.decode_response(await p.ask_stream(junk))
                        assert isinstance(err, wire.ErrorResponse) and len(err.reason.encode()) <= 255

            run(go())

    def test_error_only_on_streams(self, pki: TestPki, tsq_server: Callable[..., Any],
                                   harness: Harness) -> None:
        """§6.3.2 Error: "This TLV MUST only appear in TSQ Responses sent over QUIC streams." Our
        server answers the same bad requests with an Error on a stream and with silence in a
        datagram (malformed, signature not supported, rate limited); our client does not take an
        Error TLV in a DATAGRAM frame for an answer."""
        with tsq_server(rate_per_source=1.0, rate_burst=4.0) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for bad in (b"\xff\xff", request(signature_request=True)):
                        assert isinstance(wire.decode_response(await p.ask_stream(bad)), wire.ErrorResponse)
                        assert await p.datagrams_after(bad, 0.2) == []
                    for _ in range(4):   # the bucket is empty by now: rate limited
                        assert await p.datagrams_after(request(), 0.05) == []
                    err = wire.decode_response(await p.ask_stream(request()))
                    assert isinstance(err, wire.ErrorResponse) and err.code == 4

            run(go())
            stats = srv.stats
            assert stats["dropped"] >= 6 and stats["rate_limited"] >= 5
        h = harness()
        job = h.start("datagram")
        sent = h.sent()
        h.datagram(wire.encode_error(wire.ERR_MALFORMED, "in a datagram"))
        assert len(h.discards) == 1 and job not in h.done
        h.datagram(h.honest(sent))
        assert h.result(job).exchange is not None

    def test_error_fails_the_request(self, harness: Harness) -> None:
        """§6.3.2 Error: "Clients receiving an Error TLV MUST treat the request as failed"."""
        h = harness()
        job = h.start("stream")
        h.stream(h.sent(), wire.encode_error(wire.ERR_UNSUPPORTED_TLV, "no"))
        done = h.result(job)
        assert done.exchange is None
        assert isinstance(done.error, TsqServerError) and done.error.code == wire.ERR_UNSUPPORTED_TLV
        assert h.session.name in str(done.error) and len(h.discards) == 1

    @pytest.mark.parametrize("after", [tlv(254, bytes(4)), tlv(2, T2) + tlv(3, T3), b"\xfe"],
                             ids=["padding", "timestamps", "junk"])
    def test_nothing_after_an_error_is_parsed(self, harness: Harness, after: bytes) -> None:
        """§6.3.2 Error: Clients "MUST NOT attempt to parse any additional TLVs in the response."
        What follows an Error TLV cannot change the outcome: the request fails with the server's
        error code, whether Padding, timestamps or bytes that are no TLV at all come after it."""
        h = harness()
        job = h.start("stream")
        h.stream(h.sent(), wire.encode_error(wire.ERR_AUTH_REQUIRED, "sign") + after)
        done = h.result(job)
        assert done.exchange is None
        assert isinstance(done.error, TsqServerError), done.error
        assert done.error.code == wire.ERR_AUTH_REQUIRED

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_signed_error_covers_the_error_tlv(self, kind: str) -> None:
        """§6.3.2 Error: "If a Signature Block is present, the Error TLV MUST be included in the
        signed data." (Our server never signs Errors; the codec's signed Error is checked.)"""
        data = wire.encode_error(wire.ERR_MALFORMED, "bad", make_signer(kind))
        at, block = signature_at(data)
        assert data[:at] == wire.encode_error(wire.ERR_MALFORMED, "bad")
        assert verify_independently(kind, data[:at], block)
        err = wire.decode_response(data)
        assert isinstance(err, wire.ErrorResponse) and err.signed_data == data[:at]


class TestS6_3_2TimeSourceInfo:
    def test_absence_is_tolerated(self, tsq_server: Callable[..., Any], tsq_client: Callable[..., Any],
                                  harness: Harness) -> None:
        """§6.3.2 Time Source Info: "Servers MAY omit this field, and clients MUST tolerate its
        absence." A server without it gives samples (over QUIC and to the session)."""
        h = harness()
        job = h.start("datagram")
        h.datagram(h.honest(h.sent()))
        assert h.result(job).exchange is not None and h.result(job).exchange.time_source is None  # type: ignore[union-attr]
        with tsq_server() as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                for mode in ("stream", "datagram"):
                    assert (await c.exchange(mode)).time_source is None
                await c.close()

            run(go())


class TestS6_3_2Metadata:
    def test_unknown_keys_are_ignored(self, tsq_server: Callable[..., Any],
                                      tsq_client: Callable[..., Any]) -> None:
        """§6.3.2 Metadata: "Clients MUST ignore unknown keys." Keys this client has never heard of
        (odd bytes included) change nothing: the sample is valid and the pairs are kept as sent."""
        odd = (("zz-unknown", "?"), ("ключ", ""), ("", "empty key"), ("site", "lab"))
        with tsq_server(metadata=odd) as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                for mode in ("stream", "datagram"):
                    ex = await c.exchange(mode)
                    assert set(odd) <= set(ex.metadata)
                assert c.discarded_responses == 0
                await c.close()

            run(go())

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_signed_metadata_is_canonical(self, pki: TestPki, tsq_server: Callable[..., Any],
                                          kind: str) -> None:
        """§6.3.2 Metadata: "the Metadata TLV (Type 253) MUST be serialized in a canonical form
        before inclusion in a signed message." A server configured with pairs in any order signs
        them sorted by key bytes; the signature covers exactly those bytes."""
        given = (("zeta", "1"), ("éa", "3"), ("alpha", "4"), ("Alpha", "2"))
        with tsq_server(metadata=given, signer=make_signer(kind)) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for mode in ("stream", "datagram"):
                        answer = await ask(p, request(metadata_query=True, signature_request=True), mode)
                        keys = [k for k, _ in pairs_on_wire(answer)]
                        assert keys == sorted(k.encode() for k, _ in given)
                        at, block = signature_at(answer)
                        assert verify_independently(kind, answer[:at], block)

            run(go())

    def test_pairs_in_lexicographic_key_order_bytes_preserved(self, pki: TestPki,
                                                              tsq_server: Callable[..., Any]) -> None:
        """§6.3.2 Metadata: "key-value pairs MUST be encoded in lexicographic order by key, with
        exact UTF-8 byte sequences preserved." Order is by the UTF-8 bytes of the key ("Z" < "a" <
        "é"); NFC and NFD spellings of a value travel as given, over several TLVs when needed."""
        nfc, nfd = "é", unicodedata.normalize("NFD", "é")
        given = (("é", nfd), ("a", nfc), ("Z", "x" * 200), ("b", "y" * 200))
        encoded = wire.encode_response(wire.Response(nonce=NONCE, receive_ts=1, send_ts=2, metadata=given))
        assert pairs_on_wire(encoded) == [(b"Z", b"x" * 200), (b"a", nfc.encode()), (b"b", b"y" * 200),
                                          ("é".encode(), nfd.encode())]
        with tsq_server(metadata=given) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    answer = await p.ask_stream(request(metadata_query=True))
                    assert pairs_on_wire(answer) == pairs_on_wire(encoded)

            run(go())

    def test_no_reordering_or_normalising(self, harness: Harness) -> None:
        """§6.3.2 Metadata: "Implementations MUST NOT reorder, collapse, or normalize UTF-8 content
        during parsing or signing." A signed response whose pairs are out of canonical order and
        whose values are NFD decodes in wire order, byte for byte, and verifies over the received
        bytes: our client takes it."""
        nfd = unicodedata.normalize("NFD", "é")
        meta = tlv(253, b"\x01z\x00") + tlv(253, b"\x01a" + bytes((len(nfd.encode()),)) + nfd.encode())
        decoded = wire.decode_response(HEAD + meta)
        assert isinstance(decoded, wire.Response) and decoded.metadata == (("z", ""), ("a", nfd))
        h = harness(require_signature=True, verifier=make_verifier("ed25519"), precision=False)
        job = h.start("stream")
        sent = h.sent()
        honest = h.honest(sent)
        body = honest[:wire.SEND_TS_OFFSET + 8] + meta
        h.stream(sent, body + wire.signature_tlv(make_signer("ed25519"), body))
        ex = h.result(job).exchange
        assert ex is not None and ex.metadata == (("z", ""), ("a", nfd))


class TestS6_3_2Padding:
    def test_padding_is_zero_bytes(self, pki: TestPki, tsq_server: Callable[..., Any],
                                   harness: Harness) -> None:
        """§6.3.2 Padding: "The value MUST consist of zero-value bytes (0x00)." The codec refuses
        anything else; our client's and our server's Padding is all zero."""
        with pytest.raises(wire.WireError, match="zero-filled"):
            wire.decode_request(tlv(1, NONCE) + tlv(254, b"\x00\x01"))
        with pytest.raises(wire.WireError, match="zero-filled"):
            wire.decode_response(HEAD + tlv(254, b"\x00\x01"))
        h = harness()
        h.start("stream")
        assert all(v == bytes(len(v)) for t, v in tlvs(h.sent().data) if t == 254)
        with tsq_server(**FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for size in (100, 128, 256, 700):
                        req = wire.encode_request(wire.pad_request(
                            wire.Request(nonce=os.urandom(16), precision=True), size))
                        pads = [v for t, v in tlvs(await p.ask_stream(req)) if t == 254]
                        assert pads and all(v == bytes(len(v)) for v in pads)

            run(go())

    def test_padding_only_at_the_end(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§6.3.2 Padding: "Padding TLVs MUST appear only at the end of a TSQ message." The codec
        refuses any TLV but Padding or the Signature Block after Padding; our server's Padding is
        followed by nothing else."""
        with pytest.raises(wire.WireError, match="follows Padding"):
            wire.decode_request(tlv(1, NONCE) + tlv(254, bytes(3)) + tlv(250))
        with pytest.raises(wire.WireError, match="follows Padding"):
            wire.decode_response(HEAD + tlv(254, bytes(3)) + tlv(251, b"\x01\x01"))
        with tsq_server(signer=make_signer("ed25519"), **FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for sig in (False, True):
                        req = request(precision=True, metadata_query=True, signature_request=sig)
                        types = [t for t, _ in tlvs(await p.ask_stream(req))]
                        first = types.index(254)
                        assert set(types[first:]) <= {254, 255} and types[-1] == (255 if sig else 254)

            run(go())

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_padding_is_signed(self, pki: TestPki, tsq_server: Callable[..., Any], kind: str) -> None:
        """§6.3.2 Padding: "They MUST be included in the Signature TLV coverage if present." The
        signed bytes of a padded, signed response include its Padding TLVs."""
        with tsq_server(signer=make_signer(kind)) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for mode in ("stream", "datagram"):
                        answer = await ask(p, request(precision=True, signature_request=True), mode)
                        at, block = signature_at(answer)
                        assert 254 in [t for t, _ in tlvs(answer[:at])]
                        assert verify_independently(kind, answer[:at], block)

            run(go())

    def test_type_0_is_never_padding(self, pki: TestPki, tsq_server: Callable[..., Any],
                                     harness: Harness) -> None:
        """§6.3.2 Padding: "Type 0 is reserved and MUST NOT be used for padding." Padding of every
        size is built of type 254; our server's padded responses (any request size) and our
        client's padded requests contain no type 0."""
        for total in (0, *range(2, 600)):
            assert all(t == 254 for t, _ in tlvs(wire.padding_tlvs(total)))
        h = harness()
        h.start("stream")
        assert 0 not in [t for t, _ in tlvs(h.sent().data)]
        with tsq_server(**FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for size in range(40, 300, 7):
                        req = wire.encode_request(wire.pad_request(
                            wire.Request(nonce=os.urandom(16), precision=True), size))
                        assert 0 not in [t for t, _ in tlvs(await p.ask_stream(req))]

            run(go())


class TestS6_3_2SignatureBlock:
    def test_signature_block_is_last(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§6.3.2: "The Signature Block TLV, if present, MUST appear last." and Signature Block:
        "MUST be the final TLV in the message." The codec refuses anything after it; our server's
        signed responses end with it, in both modes."""
        signer = make_signer("hmac")
        with pytest.raises(wire.WireError, match="not the last"):
            wire.decode_response(HEAD + wire.signature_tlv(signer, HEAD) + tlv(254, bytes(2)))
        with tsq_server(signer=signer, **FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for mode in ("stream", "datagram"):
                        for req in (request(signature_request=True),
                                    request(signature_request=True, precision=True, metadata_query=True)):
                            assert tlvs(await ask(p, req, mode))[-1][0] == 255

            run(go())

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_signature_covers_every_tlv_before_it(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                  kind: str) -> None:
        """§6.3.2 Signature Block: "If included, the Signature Block MUST cover the Nonce (Type 1),
        Receive Timestamp (Type 2), Send Timestamp (Type 3), and all included optional TLVs, in
        canonical TLV order." With every optional TLV our server has, the signed bytes are all of
        them, in this implementation's canonical order (docs/wire.md)."""
        with tsq_server(signer=make_signer(kind), **FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    answer = await p.ask_stream(request(precision=True, metadata_query=True,
                                                        signature_request=True))
                    at, block = signature_at(answer)
                    signed = [t for t, _ in tlvs(answer[:at])]
                    assert [t for t, _ in tlvs(answer)][:-1] == signed
                    assert [t for i, t in enumerate(signed) if t not in signed[:i]] == \
                        [1, 2, 3, 250, 248, 251, 253, 254]
                    assert verify_independently(kind, answer[:at], block)

            run(go())

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_datagram_signature_request_gets_a_signature(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                         kind: str) -> None:
        """§6.3.2 Signature Block: "If a client includes a Signature Request TLV (Type 252), and the
        server supports authentication, then the response MUST include TLV 255." (Datagram Mode.)"""
        with tsq_server(signer=make_signer(kind)) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    answer = await p.ask_datagram(request(signature_request=True))
                    at, block = signature_at(answer)
                    assert int.from_bytes(block[1:5], "big") == KEY_ID
                    assert verify_independently(kind, answer[:at], block)

            run(go())

    @pytest.mark.parametrize("forgery", ["unsigned", "wrong key"])
    def test_unsigned_datagrams_never_pass(self, harness: Harness, forgery: str) -> None:
        """§6.3.2 Signature Block: "Clients operating in Datagram Mode without authentication MUST
        treat all responses as unauthenticated and advisory only." "Advisory" has no behaviour
        defined by the draft (docs/wire.md); checked: no unsigned or badly signed datagram response
        ever passes a client that requires authentication."""
        h = harness(require_signature=True, verifier=make_verifier("ed25519"))
        job = h.start("datagram")
        sent = h.sent()
        signer = None if forgery == "unsigned" else Ed25519Signer(KEY_ID, bytes(32))  # same id, other key
        h.datagram(h.honest(sent, signer=signer))
        done = h.result(job)
        assert done.exchange is None and "signature" in str(done.error) and len(h.discards) == 1
