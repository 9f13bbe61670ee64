"""Draft-01 §7 Security Considerations (clause table: test_draft01.py).

`tsq/1` (the ALPN of the implementation deployed in the wild) is a documented, opt-in deviation from
"exactly tsq" (docs/wire.md "Choices where draft-01 is open"); by default both sides speak only `tsq`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Optional, Sequence

import pytest
from draft01_support import (
    SIGNER_KINDS,
    ClientHarness,
    Ctx,
    aioquic_server,
    make_signer,
    make_verifier,
    open_probe,
    run,
    signature_at,
    tlvs,
    verify_independently,
)

from tsq import wire
from tsq.quic.client import TsqHandshakeError
from tsq.session.client import ClientOptions, ClientSession, Instant
from tsq.session.errors import TsqError, TsqInvalidResponse, TsqServerError
from tsq.session.server import CloseConnection, ServerPolicy, ServerSession, ServerStats, stamp_paths
from tsq.testing.certs import TestPki

Harness = Callable[..., ClientHarness]
NOT_TSQ = [["tsq/1"], ["TSQ"], ["tsq "], ["tsqx"], ["h3"], None]


def request(**kw: Any) -> bytes:
    return wire.encode_request(wire.Request(nonce=os.urandom(16), **kw))


class TestS7Alpn:
    def test_server_accepts_exactly_tsq(self, pki: TestPki, tsq_server: Callable[..., Any]) -> None:
        """§7: "Implementations MUST verify that the negotiated ALPN value is exactly "tsq"." Our
        server refuses a client that offers anything else (case, suffix, version, none at all)."""

        async def refused(alpn: Optional[Sequence[str]], port: int) -> bool:
            try:
                async with open_probe(pki, port, alpn=alpn):
                    return False
            except ConnectionError:
                return True

        with tsq_server() as srv:
            async def go() -> None:
                outcome = await asyncio.gather(*(refused(alpn, srv.port) for alpn in NOT_TSQ))
                assert dict(zip(map(repr, NOT_TSQ), outcome)) == {repr(a): True for a in NOT_TSQ}
                async with open_probe(pki, srv.port, alpn=["h3", "tsq"]) as p:
                    assert p.alpn == "tsq"

            run(go())

    def test_server_session_closes_anything_but_tsq(self) -> None:
        """§7: "Implementations MUST verify that the negotiated ALPN value is exactly "tsq"." The
        sans-IO server session closes a connection with any other ALPN (also when QUIC let one
        through) and answers nothing on it."""
        for alpn in ("tsq/1", "TSQ", "h3", None):
            s = ServerSession(ServerPolicy(), ServerStats(), stamp_paths(), "src")
            assert [type(a) for a in s.handshake_completed(alpn)] == [CloseConnection]
            assert s.datagram_received(request(), 0, 0.0) == []
            s.stream_data(0, request(), True, 0)
            assert s.packet_done(0.0) == []
        ok = ServerSession(ServerPolicy(), ServerStats(), stamp_paths(), "src")
        assert ok.handshake_completed("tsq") == []

    @pytest.mark.parametrize("alpn", [["tsq/1"], ["h3"], None], ids=repr)
    def test_client_rejects_anything_but_tsq(self, pki: TestPki, tsq_client: Callable[..., Any],
                                             alpn: Optional[Sequence[str]]) -> None:
        """§7: "Clients MUST reject any QUIC connection where the negotiated ALPN does not exactly
        match "tsq"." Against servers offering something else, or no ALPN at all."""

        async def go() -> None:
            async with aioquic_server(pki, alpn) as port:
                c = tsq_client(port, connect_timeout_s=3.0)
                with pytest.raises(TsqHandshakeError):
                    await c.connect()
                await c.close()

        run(go())

    def test_client_session_rejects_anything_but_tsq(self) -> None:
        """§7: "Clients MUST reject any QUIC connection where the negotiated ALPN does not exactly
        match "tsq"." The sans-IO client session refuses every other outcome of the handshake."""
        for alpn in ("tsq/1", "TSQ", "tsq ", "h3", None):
            session = ClientSession(ClientOptions(name="s:1"))
            with pytest.raises(TsqHandshakeError, match="ALPN"):
                session.handshake_completed(Instant(0, 0), alpn, True)
            assert not session.connected
        session = ClientSession(ClientOptions(name="s:1"))
        session.handshake_completed(Instant(0, 0), "tsq", True)
        assert session.connected and session.alpn == "tsq"

    def test_legacy_alpn_is_opt_in_visible_and_limited(self, pki: TestPki,
                                                       tsq_server: Callable[..., Any],
                                                       tsq_client: Callable[..., Any]) -> None:
        """§7 (the documented deviation): `tsq/1` only where both sides opt in; then the client
        reports it, the server answers TLVs 1-3 only, refuses Signature Requests with Error 3,
        drops datagrams, and a client that requires signatures refuses the connection."""
        with tsq_server(legacy_alpn=True, signer=make_signer("ed25519"), metadata=(("site", "lab"),)) as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port, alpn=["tsq/1"]) as p:
                    assert p.alpn == "tsq/1"
                    req = wire.encode_request(wire.pad_request(wire.Request(
                        nonce=os.urandom(16), precision=True, metadata_query=True)))
                    assert [t for t, _ in tlvs(await p.ask_stream(req))] == [1, 2, 3]
                    err = wire.decode_response(await p.ask_stream(request(signature_request=True)))
                    assert isinstance(err, wire.ErrorResponse) and err.code == wire.ERR_AUTH_REQUIRED
                    assert "tsq/1" in err.reason
                    assert await p.datagrams_after(request(), 0.2) == []
                default = tsq_client(srv.port)
                await default.connect()
                assert default.alpn_protocol == "tsq"   # tsq/1 only for a client that asks for it
                await default.close()
                legacy = tsq_client(srv.port, alpn=["tsq/1"])
                assert (await legacy.exchange("auto")).mode == "stream"
                assert legacy.alpn_protocol == "tsq/1" and not legacy.datagrams_available
                await legacy.close()
                strict = tsq_client(srv.port, alpn=["tsq/1"], require_signature=True,
                                    verifier=make_verifier("ed25519"))
                with pytest.raises(TsqHandshakeError, match="signatures"):
                    await strict.connect()
                await strict.close()

            run(go())


class TestS7Replay:
    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_replayed_response_is_rejected(self, tsq_server: Callable[..., Any],
                                           tsq_client: Callable[..., Any], mode: str) -> None:
        """§7: "implementations MUST validate echoed nonces and timestamp monotonicity to guard
        against application-level replay attacks." A server that answers a request with its answer
        to the previous one gives no sample; a fresh answer afterwards does."""

        def replay_third(ctx: Ctx) -> Any:
            if ctx.number == 3:
                return [ctx.reply(lambda t3: ctx.session.sent[-1])]
            return [ctx.reply(ctx.honest)]

        with tsq_server(replay_third) as srv:
            async def go() -> None:
                c = tsq_client(srv.port, timeout_s=0.3)
                await c.exchange(mode)
                with pytest.raises(TsqError):
                    await c.exchange(mode)
                assert c.discarded_responses == 1
                assert (await c.exchange(mode)).delay_ns > 0
                await c.close()

            run(go())

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_non_monotonic_timestamps_are_rejected(self, harness: Harness, mode: str) -> None:
        """§7: "implementations MUST validate ... timestamp monotonicity". T3 before T2 is no
        sample (§6.6 has the other anomalies)."""
        h = harness()
        job = h.start(mode)
        sent = h.sent()
        t2 = h.t2_ntp(sent)
        bad = h.honest(sent, t3=t2 - (1 << 32) // 1000)   # 1 ms before T2
        h.reply(sent, bad)
        done = h.result(job)
        assert done.exchange is None and "T3 earlier than T2" in str(done.error)


class TestS7Signatures:
    @pytest.mark.parametrize("kind", SIGNER_KINDS)
    def test_signature_request_gets_signature_or_failure(self, pki: TestPki,
                                                         tsq_server: Callable[..., Any], kind: str) -> None:
        """§7: "Servers that receive this TLV MUST include a valid Signature Block TLV (Type 255) in
        the response or fail the request." A signing server signs validly, in both modes; a server
        without a key fails the request: Error 3 on a stream, nothing in a datagram."""
        with tsq_server(signer=make_signer(kind)) as signing, tsq_server() as plain:
            async def go() -> None:
                async with open_probe(pki, signing.port) as p:
                    for answer in (await p.ask_stream(request(signature_request=True)),
                                   await p.ask_datagram(request(signature_request=True))):
                        at, block = signature_at(answer)
                        assert verify_independently(kind, answer[:at], block)
                async with open_probe(pki, plain.port) as p:
                    err = wire.decode_response(await p.ask_stream(request(signature_request=True)))
                    assert isinstance(err, wire.ErrorResponse) and err.code == wire.ERR_AUTH_REQUIRED
                    assert await p.datagrams_after(request(signature_request=True), 0.2) == []

            run(go())

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_unsigned_response_is_discarded(self, harness: Harness, mode: str) -> None:
        """§7: "If no Signature Block is present in the response, the client MUST treat the
        exchange as unauthenticated and discard it.\""""
        h = harness(require_signature=True, verifier=make_verifier("hmac"))
        job = h.start(mode)
        sent = h.sent()
        assert sent.req.signature_request
        unsigned = h.honest(sent)   # the honest peer is asked to sign, but no signer is given
        assert wire.decode_response(unsigned).signature is None  # type: ignore[union-attr]
        h.reply(sent, unsigned)
        done = h.result(job)
        assert done.exchange is None and "unsigned" in str(done.error) and len(h.discards) == 1

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_stripped_signature_over_quic(self, tsq_server: Callable[..., Any],
                                          tsq_client: Callable[..., Any], mode: str) -> None:
        """§7: "the client MUST treat the exchange as unauthenticated and discard it." A server
        that drops the Signature Block from its signed answers gives our client no sample."""

        def strip(ctx: Ctx) -> Any:
            def unsigned(t3: int) -> bytes:
                data = ctx.honest(t3)
                return data[:signature_at(data)[0]]
            return [ctx.reply(unsigned)]

        with tsq_server(strip, signer=make_signer("ed25519")) as srv:
            async def go() -> None:
                c = tsq_client(srv.port, require_signature=True, verifier=make_verifier("ed25519"))
                with pytest.raises(TsqInvalidResponse, match="unsigned"):
                    await c.exchange(mode)
                assert c.discarded_responses >= 1
                await c.close()

            run(go())


class TestS7TimeSourceInfo:
    @pytest.mark.parametrize("info", [wire.TimeSourceInfo(0, 5, "unsynchronised"),
                                      wire.TimeSourceInfo(1, 1, "gps"), wire.TimeSourceInfo(15, 4, "")],
                             ids=["stratum0", "stratum1", "stratum15"])
    def test_time_source_info_is_advisory(self, harness: Harness, info: wire.TimeSourceInfo) -> None:
        """§7: "clients MUST treat this TLV as advisory." Whatever it claims, it neither makes nor
        breaks a sample: valid stamps give a sample that carries it, unchanged."""
        h = harness()
        job = h.start("datagram")
        h.datagram(h.honest(h.sent(), time_source=info))
        ex = h.result(job).exchange
        assert ex is not None and ex.time_source == info

    @pytest.mark.parametrize("fault", ["wrong nonce", "unsigned", "T3 < T2"])
    def test_time_source_info_is_no_substitute(self, harness: Harness, fault: str) -> None:
        """§7: "It MUST NOT be used as a substitute for cryptographic integrity or freshness
        validation." A stratum-1 GPS claim does not rescue a response that fails the nonce, the
        signature or the timestamp checks."""
        gps = wire.TimeSourceInfo(1, 1, "gps")
        h = harness(require_signature=fault == "unsigned", verifier=make_verifier("ed25519"))
        job = h.start("stream")
        sent = h.sent()
        signer = None if fault == "unsigned" else make_signer("ed25519")
        data = h.honest(sent, time_source=gps, signer=signer,
                        t3=h.t2_ntp(sent) - (1 << 32) // 1000 if fault == "T3 < T2" else None)
        if fault == "wrong nonce":
            data = data[:2] + bytes(16) + data[18:]
        h.stream(sent, data)
        done = h.result(job)
        assert done.exchange is None and isinstance(done.error, TsqInvalidResponse)
        assert not isinstance(done.error, TsqServerError)
