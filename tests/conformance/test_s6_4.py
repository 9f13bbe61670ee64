"""Draft-01 §6.4 Precision Mode (clause table: test_draft01.py).

This implementation's reading (docs/wire.md "Choices where draft-01 is open"): the ack is a promise of
equal lengths, so the server acknowledges only a request it can match byte for byte.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List

import pytest
from draft01_support import SIGNER_KINDS, ClientHarness, make_signer, open_probe, run, tlv, tlvs

from tsq import wire
from tsq.testing.certs import TestPki

FULL = dict(metadata=(("site", "lab"), ("region", "eu")), time_source=wire.TimeSourceInfo(1, 1, "gps"),
            clock_quality=wire.ClockQuality(1, 2, 3, "gpsdo"))
Harness = Callable[..., ClientHarness]


def precision_request(size: int = wire.PRECISION_REQUEST_SIZE, **kw: Any) -> bytes:
    req = wire.Request(nonce=os.urandom(16), precision=True, **kw)
    return wire.encode_request(wire.pad_request(req, size))


async def ask(p: Any, data: bytes, mode: str) -> bytes:
    return bytes(await (p.ask_stream(data) if mode == "stream" else p.ask_datagram(data)))


def types(message: bytes) -> List[int]:
    return [t for t, _ in tlvs(message)]


class TestS6_4:
    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_supporting_server_acknowledges(self, pki: TestPki, tsq_server: Callable[..., Any],
                                            mode: str) -> None:
        """§6.4: "If the server also supports Precision Mode, it MUST include a zero-length
        Precision Mode Acknowledgment TLV (Type 250) in the TSQ Response." (For requests whose
        length the response can match; see test_lengths_are_equal for the others.)"""
        with tsq_server(**FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for req in (precision_request(), precision_request(metadata_query=True)):
                        assert (250, b"") in tlvs(await ask(p, req, mode))

            run(go())

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_server_without_precision_omits_the_ack(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                    mode: str) -> None:
        """§6.4: "If the server does not support Precision Mode, it MUST omit this TLV." A server
        run with precision off (`tsq server --no-precision`) neither acks nor pads."""
        with tsq_server(precision=False) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    answer = await ask(p, precision_request(), mode)
                    assert 250 not in types(answer) and 254 not in types(answer)

            run(go())

    def test_client_reads_no_ack_as_no_support(self, harness: Harness, tsq_server: Callable[..., Any],
                                               tsq_client: Callable[..., Any]) -> None:
        """§6.4: "Clients MUST interpret the absence of the acknowledgment TLV as lack of support"
        (and MAY proceed without Precision Mode). A whole response without the ack (here its FIN
        comes 5 ms after its bytes) is a valid sample, unpadded, stamped at its last byte, not at
        the FIN; over QUIC against a server with precision off, likewise."""
        h = harness()
        job = h.start("stream")
        sent = h.sent()
        assert sent.req.precision
        h.stream(sent, h.honest(sent, precision=False), fin=False)
        last_byte = h.raw
        h.stream(sent, b"", gap_ns=5_000_000)
        ex = h.result(job).exchange
        assert ex is not None and ex.t4_raw == last_byte
        with tsq_server(precision=False) as srv:
            async def go() -> None:
                c = tsq_client(srv.port)
                for mode in ("stream", "datagram"):
                    assert (await c.exchange(mode)).delay_ns > 0
                await c.close()

            run(go())

    def test_client_waits_for_the_acknowledged_length(self, harness: Harness) -> None:
        """§6.4 (the other side of the ack): an acknowledged response is as long as the request, so
        the client takes it as complete, and stamps T4, only when its Padding has come too."""
        h = harness()
        job = h.start("stream")
        sent = h.sent()
        answer = h.honest(sent)
        assert len(answer) == len(sent.data) and (250, b"") in tlvs(answer)
        h.stream(sent, answer[:40], fin=False)   # Nonce, T2, T3, ack: parses, yet is not all
        assert job not in h.done
        h.stream(sent, answer[40:], fin=False, gap_ns=3_000_000)
        ex = h.result(job).exchange
        assert ex is not None and ex.t4_raw == h.raw

    @pytest.mark.parametrize("signer", [None, *SIGNER_KINDS])
    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_lengths_are_equal(self, pki: TestPki, tsq_server: Callable[..., Any], signer: Any,
                               mode: str) -> None:
        """§6.4: "When Precision Mode is successfully negotiated, both endpoints MUST ensure that
        the total byte length of the TSQ Request and Response messages are identical." On the wire,
        for requests of many sizes, signed or not: every acknowledged response is exactly as long
        as its request, and a request no response can match (too short, or one byte off) gets no
        ack."""
        cfg = dict(FULL, signer=make_signer(signer)) if signer else FULL
        with tsq_server(**cfg) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    acked = []
                    for size in (20, 64, 100, 128, 200, 256, 600, 1000):
                        req = (tlv(1, os.urandom(16)) + tlv(250) if size == 20 else
                               precision_request(size, metadata_query=True, signature_request=bool(signer)))
                        answer = await ask(p, req, mode)
                        if 250 in types(answer):
                            assert len(answer) == len(req), size
                            acked.append(size)
                    assert 20 not in acked and {256, 600, 1000} <= set(acked)
                    # The one-byte-short case: a request exactly one byte longer than the natural
                    # acknowledged response (no TLV is 1 byte, so it cannot be matched with the ack).
                    natural = await ask(p, precision_request(1000, signature_request=bool(signer)), mode)
                    unpadded = len(natural) - sum(2 + len(v) for t, v in tlvs(natural) if t == 254)
                    req = precision_request(unpadded + 1, signature_request=bool(signer))
                    answer = await ask(p, req, mode)
                    assert 250 not in types(answer) and len(answer) == len(req)

            run(go())

    def test_client_pads_its_requests(self, harness: Harness) -> None:
        """§6.4: "both endpoints MUST ensure that the total byte length ... are identical" and
        "implementations MUST include a Padding TLV (Type 254) to pad the message as needed": our
        client's Precision requests are padded with Padding TLVs to the length the response will
        have (before any response: the smallest response that acknowledges Precision Mode, with the
        interleaved report when it asks for one)."""
        smallest = len(wire.encode_response(wire.Response(bytes(16), 0, 0, precision=True)))
        for opts in ({}, {"require_signature": True}, {"interleaved": False, "metadata_query": False}):
            h = harness(**opts)
            h.start("datagram")
            data = h.sent().data
            assert len(data) >= smallest and 254 in types(data)

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_server_pads_with_padding_tlvs(self, pki: TestPki, tsq_server: Callable[..., Any],
                                           mode: str) -> None:
        """§6.4: "implementations MUST include a Padding TLV (Type 254) to pad the message as
        needed. Padding MUST consist entirely of zero-value bytes and MUST appear after all other
        TLVs except the Signature Block." The server's filler is Padding TLVs, zeros, at the end."""
        with tsq_server(**FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for size in (128, 256, 900):
                        answer = await ask(p, precision_request(size, metadata_query=True), mode)
                        t = types(answer)
                        first = t.index(254)
                        assert set(t[first:]) == {254}
                        assert all(v == bytes(len(v)) for k, v in tlvs(answer) if k == 254)

            run(go())

    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_padding_immediately_before_the_signature(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                      kind: str) -> None:
        """§6.4: "If used with the Signature Block TLV, Padding MUST appear immediately before
        it.\""""
        with tsq_server(signer=make_signer(kind), **FULL) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for mode in ("stream", "datagram"):
                        t = types(await ask(p, precision_request(metadata_query=True, signature_request=True),
                                            mode))
                        assert t[-1] == 255 and t[-2] == 254
                        assert set(t[t.index(254):-1]) == {254}

            run(go())

    def test_precision_tlv_with_a_value_is_zero_length(self, pki: TestPki, tsq_server: Callable[..., Any],
                                                       harness: Harness) -> None:
        """§6.4: "This TLV MAY be extended in the future to include payload data for enhanced
        negotiation, though current implementations MUST treat the TLV as zero-length." A value is
        neither an error nor echoed: the codec reads the flag, the server answers (equal length,
        empty ack), the client recognises an ack that carries a value."""
        req = wire.decode_request(tlv(1, bytes(16)) + tlv(250, b"v2"))
        assert req.precision
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for mode in ("stream", "datagram"):
                        body = tlv(1, os.urandom(16)) + tlv(250, b"future")
                        data = body + wire.padding_tlvs(wire.PRECISION_REQUEST_SIZE - len(body))
                        answer = await ask(p, data, mode)
                        assert len(answer) == len(data) and (250, b"") in tlvs(answer)

            run(go())
            assert srv.stats["errors_sent"] == 0
        h = harness()
        job = h.start("stream")
        sent = h.sent()
        body = h.honest(sent, precision=False) + tlv(250, b"v2")
        h.stream(sent, body + wire.padding_tlvs(len(sent.data) - len(body)), fin=False)
        ex = h.result(job).exchange
        assert ex is not None
