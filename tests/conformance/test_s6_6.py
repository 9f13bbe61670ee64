"""Draft-01 §6.6 Error Handling (clause table: test_draft01.py)."""

from __future__ import annotations

import logging
from typing import Any, Callable, List

import pytest
from draft01_support import REAL_MINUS_RAW, ClientHarness, Ctx, open_probe, run, tlv

from tsq import wire
from tsq.session.errors import TsqError, TsqInvalidResponse
from tsq.session.xleave import XLEAVE_RESPONSE_KEY, format_xleave
from tsq.testing.certs import TestPki
from tsq.testing.wire import load_vectors

Harness = Callable[..., ClientHarness]
MALFORMED = load_vectors("wire_malformed.json")["vectors"]
NS = 1 << 32   # one second in ntp64 units


def bad_nonce(kind: str, honest: bytes) -> bytes:
    """`honest` with its Nonce missing, of the wrong size, or not the request's."""
    if kind == "missing":
        return honest[18:]
    if kind == "malformed":
        return tlv(1, honest[2:10]) + honest[18:]
    return honest[:2] + bytes(b ^ 0x5A for b in honest[2:18]) + honest[18:]


def shift(ntp: int, seconds: float) -> int:
    return ntp + round(seconds * NS)


class TestS6_6:
    def test_tlv_structures_are_validated(self, pki: TestPki, tsq_server: Callable[..., Any],
                                          harness: Harness) -> None:
        """§6.6: "TSQ implementations MUST validate all TLV structures." The codec refuses every
        malformed vector (tests/vectors/wire_malformed.json); our server answers malformed stream
        requests with Error 1 and drops malformed datagrams; our client refuses malformed
        responses."""
        for vec in MALFORMED:
            decode = wire.decode_request if vec["kind"] == "request" else wire.decode_response
            with pytest.raises(wire.WireError):
                decode(bytes.fromhex(vec["hex"]))
        requests = [bytes.fromhex(v["hex"]) for v in MALFORMED if v["kind"] == "request" and v["hex"]][:12]
        with tsq_server() as srv:
            async def go() -> None:
                async with open_probe(pki, srv.port) as p:
                    for data in requests:
                        err = wire.decode_response(await p.ask_stream(data))
                        assert isinstance(err, wire.ErrorResponse) and err.code == wire.ERR_MALFORMED
                        assert await p.datagrams_after(data, 0.02) == []

            run(go())
            assert srv.stats["dropped"] == len(requests)
        responses = [bytes.fromhex(v["hex"]) for v in MALFORMED if v["kind"] == "response" and v["hex"]]
        for data in responses:
            h = harness()
            job = h.start("stream")
            h.stream(h.sent(), data)
            done = h.result(job)
            assert done.exchange is None and isinstance(done.error, TsqInvalidResponse), data.hex()

    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_echoed_nonce_is_validated(self, harness: Harness, mode: str) -> None:
        """§6.6: "Clients MUST validate that the echoed nonce in the TSQ Response matches the nonce
        originally sent in the request." A response with another nonce is no answer to it (on a
        stream: the exchange fails; in a datagram: it is discarded and the real answer still
        counts)."""
        h = harness()
        job = h.start(mode)
        sent = h.sent()
        forged = bad_nonce("mismatch", h.honest(sent))
        if mode == "stream":
            h.stream(sent, forged)
            assert h.result(job).exchange is None and "nonce" in str(h.result(job).error)
        else:
            h.datagram(forged)
            assert job not in h.done
            h.datagram(h.honest(sent))
            assert h.result(job).exchange is not None
        assert len(h.discards) == 1

    @pytest.mark.parametrize("kind", ["missing", "malformed", "mismatch"])
    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_bad_nonce_is_discarded_logged_and_invalid(self, tsq_server: Callable[..., Any],
                                                       tsq_client: Callable[..., Any],
                                                       caplog: pytest.LogCaptureFixture,
                                                       mode: str, kind: str) -> None:
        """§6.6: "If the nonce is missing, incorrectly formatted, or does not match, clients MUST
        discard the response, log a diagnostic warning, and treat the exchange as invalid." Over
        QUIC: the response is counted as discarded, a WARNING naming the server is logged, and the
        exchange gives no sample."""

        def script(ctx: Ctx) -> Any:
            return None if ctx.number == 1 else [ctx.reply(lambda t3: bad_nonce(kind, ctx.honest(t3)))]

        with tsq_server(script) as srv, caplog.at_level(logging.INFO, logger="tsq.client"):
            async def go() -> None:
                c = tsq_client(srv.port, timeout_s=0.3)
                with pytest.raises(TsqError):
                    await c.exchange(mode)
                assert c.discarded_responses == 1
                assert c.name in c.discards[-1], c.discards
                logged = [(r.levelno, r.getMessage()) for r in caplog.records]
                warnings: List[str] = [m for level, m in logged if level >= logging.WARNING]
                assert any(c.name in w for w in warnings), logged
                await c.close()

            run(go())

    @pytest.mark.parametrize("anomaly", ["T3 < T2", "T4 < T1", "RTT <= 0", "offset > 24 h", "no T3"])
    @pytest.mark.parametrize("mode", ["stream", "datagram"])
    def test_no_sample_unless_all_four_timestamps_are_valid(self, harness: Harness, anomaly: str,
                                                            mode: str) -> None:
        """§6.6: "Clients MUST NOT apply any synchronization adjustment based on a TSQ Response
        ... unless all four timestamps (T1-T4) are consistent and validated." Each of the draft's
        anomalies (and a missing T3) ends the exchange without a sample, discarded and named."""
        h = harness()
        job = h.start(mode)
        sent = h.sent()
        t2 = h.t2_ntp(sent)
        honest = {
            "T3 < T2": lambda: h.honest(sent, t3=shift(t2, -0.001)),
            "RTT <= 0": lambda: h.honest(sent, t3=shift(t2, 0.5)),
            "offset > 24 h": lambda: h.honest(sent, t2=shift(t2, 90_000), t3=shift(t2, 90_000.00001)),
            "no T3": lambda: h.honest(sent)[:wire.SEND_TS_OFFSET - 2],
            "T4 < T1": lambda: h.honest(sent),
        }[anomaly]()
        if anomaly == "T4 < T1":
            h.raw = sent.t1_raw - 100_000 - 100_000   # the packet is stamped before the request left
        h.reply(sent, honest)
        done = h.result(job)
        assert done.exchange is None and isinstance(done.error, TsqInvalidResponse)
        assert len(h.discards) == 1 and h.session.name in h.discards[0]

    def test_interleaved_t3_is_validated_too(self, harness: Harness) -> None:
        """§6.6: "... unless all four timestamps (T1-T4) are consistent and validated." The precise
        T3 a server reports for the previous exchange (interleaved mode) is checked like any T3: a
        report earlier than that exchange's T2 refines nothing, and the sample comes from an
        exchange whose four stamps all pass."""
        h = harness()
        job = h.start("stream", "sample")
        first = h.sent()
        h.stream(first, h.honest(first))
        basic = h.result(job).exchange
        assert basic is not None
        job = h.start("stream", "sample")
        second = h.sent()
        too_early = basic.t2_unix - 1_000
        h.stream(second, h.honest(second, metadata=((XLEAVE_RESPONSE_KEY, format_xleave(first.req.nonce,
                                                                                       too_early)),)))
        assert job not in h.done        # the refinement failed: the job asks again
        third = h.sent()
        good = second.t1_raw + 40_000 + REAL_MINUS_RAW + 7_000   # 7 µs after the second's T2
        h.stream(third, h.honest(third, metadata=((XLEAVE_RESPONSE_KEY, format_xleave(second.req.nonce,
                                                                                      good)),)))
        done = h.result(job)
        assert done.interleaved and done.exchange is not None
        assert done.exchange.t1_raw == second.t1_raw and done.exchange.t3_unix == good

    def test_rejected_answer_refines_nothing(self, harness: Harness) -> None:
        """§6.6: "Clients MUST NOT apply any synchronization adjustment based on a TSQ Response
        ... unless all four timestamps (T1-T4) are consistent and validated." An answer that fails
        the checks (its T2 10 ms after its T3) is not validated, so nothing it carries may reach a
        sample, not even the interleaved T3 it reports for the previous exchange."""
        h = harness()
        job = h.start("stream", "sample")
        first = h.sent()
        h.stream(first, h.honest(first))
        assert h.result(job).exchange is not None
        job = h.start("stream", "sample")
        second = h.sent()
        t2 = h.t2_ntp(second)
        precise = first.t1_raw + REAL_MINUS_RAW + 47_000    # a plausible TX time for the first answer
        report = ((XLEAVE_RESPONSE_KEY, format_xleave(first.req.nonce, precise)),)
        h.stream(second, h.honest(second, t2=t2 + NS // 100, t3=t2, metadata=report))
        assert len(h.discards) == 1 and "T3 earlier than T2" in h.discards[0]
        done = h.done.get(job)
        assert done is None or done.exchange is None, \
            "a sample came out of a rejected answer's interleaved report"
