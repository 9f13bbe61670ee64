"""ServerSession: requests and T2 in, Actions out; ServerPolicy, RateLimiter, StampResidual, stats."""

from __future__ import annotations

from typing import Any, List, Optional

import pytest

from tsq import wire
from tsq.auth import HmacSigner, Verifier
from tsq.ntp import unix_ns_to_ntp64
from tsq.session.framing import MAX_REQUEST_BYTES
from tsq.session.server import (
    ERR_RATE_LIMITED,
    QUIC_APP_REFUSED,
    Action,
    Answer,
    CloseConnection,
    RateLimiter,
    SendError,
    ServerPolicy,
    ServerSession,
    ServerStats,
    StampResidual,
    StopStream,
    stamp_paths,
)
from tsq.session.xleave import format_xleave

NS = 1_000_000_000
T2 = 1_795_000_000 * NS + 123_456
SIGNER = HmacSigner(5, b"server-session-secret")
NONCE = bytes(range(16))


def session(policy: Optional[ServerPolicy] = None, alpn: Optional[str] = "tsq",
            limiter: Optional[RateLimiter] = None) -> ServerSession:
    s = ServerSession(policy or ServerPolicy(), ServerStats(), stamp_paths(), "192.0.2.1", limiter)
    if alpn is not None:
        s.handshake_completed(alpn)
    return s


def request(nonce: bytes = NONCE, **kw: Any) -> bytes:
    pad = kw.pop("pad", False)
    req = wire.Request(nonce, **kw)
    return wire.encode_request(wire.pad_request(req) if pad else req)


def response(action: Action, t3: int = T2 + 1000) -> wire.Response:
    assert isinstance(action, Answer)
    b = action.builder
    b.buffer[b.send_ts_offset:b.send_ts_offset + 8] = unix_ns_to_ntp64(t3).to_bytes(8, "big")
    resp = wire.decode_response(b.finish())
    assert isinstance(resp, wire.Response)
    return resp


def one(actions: List[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


def error_of(action: Action) -> wire.ErrorResponse:
    assert isinstance(action, SendError)
    err = wire.decode_response(action.payload)
    assert isinstance(err, wire.ErrorResponse)
    return err


def stream(s: ServerSession, sid: int, data: bytes, fin: bool = True, t2: int = T2) -> List[Action]:
    """One packet carrying one STREAM frame."""
    return s.stream_data(sid, data, fin, t2) + s.packet_done(1.0)


# ------------------------------------------------------------------------------------------ ALPN
def test_alpn() -> None:
    s = session(alpn=None)
    assert s.handshake_completed("h3") == [CloseConnection(QUIC_APP_REFUSED, "ALPN tsq required")]
    assert s.datagram_received(request(), T2, 1.0) == [] and s.stats.requests_datagram == 0
    assert stream(s, 0, request()) == [] and s.stats.requests_stream == 0
    s = session(alpn=None)
    assert s.handshake_completed("tsq/1") == [CloseConnection(QUIC_APP_REFUSED, "ALPN tsq required")]
    s = session(ServerPolicy(legacy_alpn=True), alpn=None)
    assert s.handshake_completed("tsq/1") == [] and s.legacy
    assert s.policy.alpns() == ["tsq", "tsq/1"] and ServerPolicy().alpns() == ["tsq"]
    s = session(alpn=None)
    assert s.handshake_completed("tsq") == [] and not s.legacy


def test_requests_before_the_handshake_are_not_answered() -> None:
    s = session(alpn=None)
    assert s.datagram_received(request(), T2, 1.0) == []
    assert stream(s, 0, request()) == []
    s.handshake_completed("tsq")
    assert stream(s, 0, request()) == []                 # that stream is finished
    assert isinstance(one(stream(s, 4, request())), Answer)


# ------------------------------------------------------------------------------------------ answers
def test_datagram_request_is_planned_with_its_t2() -> None:
    s = session()
    a = one(s.datagram_received(request(), T2, 1.0))
    assert isinstance(a, Answer)
    assert (a.stream_id, a.nonce, a.path, a.late, a.compensation_ns) == (None, NONCE, (False, True), True, 0)
    resp = response(a)
    assert resp.nonce == NONCE and resp.receive_ts == unix_ns_to_ntp64(T2)
    assert s.stats.requests_datagram == 1 and s.stats.snapshot()["requests_datagram"] == 1


def test_stream_request_complete_without_fin_t2_of_its_last_packet() -> None:
    s = session()
    data = request(pad=True, precision=True)
    assert s.stream_data(0, data[:10], False, T2) == [] and s.packet_done(1.0) == []
    a = one(stream(s, 0, data[10:], fin=False, t2=T2 + 500))
    assert isinstance(a, Answer) and a.stream_id == 0 and a.path == (False, False)
    assert response(a).receive_ts == unix_ns_to_ntp64(T2 + 500)
    assert stream(s, 0, b"", fin=True) == []              # the late FIN: nothing more
    assert s.stats.requests_stream == 1


def test_bare_fin_completes_what_arrived() -> None:
    s = session()
    assert stream(s, 0, request()[:12], fin=False) == []
    err = error_of(one(stream(s, 0, b"", fin=True)))
    assert err.code == wire.ERR_MALFORMED and "Nonce" in err.reason
    assert error_of(one(stream(s, 4, b"", fin=True))).reason == "empty message"
    assert s.stats.errors_sent == 2


def test_malformed_requests() -> None:
    s = session()
    assert s.datagram_received(b"\x02\x00", T2, 1.0) == [] and s.stats.dropped == 1   # silent (§6.6)
    err = error_of(one(stream(s, 0, b"\x01\x10" + NONCE + b"\x02\x08" + bytes(8))))
    assert err.code == wire.ERR_MALFORMED
    assert err.reason == "Receive Timestamp (type 2) at offset 18 is not allowed in a request"


def test_only_client_bidirectional_streams_are_read() -> None:
    s = session()
    for sid in (1, 2, 3, 6):
        assert stream(s, sid, request()) == []
    assert s.stats.requests_stream == 0


def test_reset_stream_is_forgotten() -> None:
    s = session()
    s.stream_data(0, request()[:5], False, T2)
    s.stream_reset(0)
    assert s.packet_done(1.0) == [] and stream(s, 0, request()) == []


def test_finished_streams_are_remembered_in_bounded_memory() -> None:
    s = session()
    for i in range(1100):
        assert isinstance(one(stream(s, 4 * i, request())), Answer)
    assert stream(s, 4 * 1099, request()) == []           # recent: still finished
    assert stream(s, 4 * 100, request()) == []            # far below the newest: finished too
    # Forgotten ids are below a floor (stream ids only grow: such a stream cannot be new): refused.
    assert stream(s, 0, request()) == []
    assert isinstance(one(stream(s, 4 * 1100, request())), Answer)


def test_precision_mode() -> None:
    s = session()
    padded = request(pad=True, precision=True)
    a = one(s.datagram_received(padded, T2, 1.0))
    assert isinstance(a, Answer) and a.builder.size == len(padded) == wire.PRECISION_REQUEST_SIZE
    assert response(a).precision and a.builder.precision_acked
    a = one(s.datagram_received(request(), T2, 1.0))      # no Precision asked: none given, no padding
    assert isinstance(a, Answer) and not response(a).precision and response(a).padding == 0
    s = session(ServerPolicy(precision=False))            # `--no-precision`
    a = one(s.datagram_received(padded, T2, 1.0))
    resp = response(a)
    assert not resp.precision and resp.padding == 0 and len(a.builder.finish()) < len(padded)


def test_metadata_only_to_those_who_query() -> None:
    s = session(ServerPolicy(metadata=(("site", "lab"),)))
    queried = one(s.datagram_received(request(metadata_query=True), T2, 1.0))
    assert response(queried).metadata == (("site", "lab"),)
    assert response(one(s.datagram_received(request(), T2, 1.0))).metadata == ()


def test_xleave_report_only_to_clients_that_ask() -> None:
    s = session(ServerPolicy(metadata=(("site", "lab"),)))
    asks = request(metadata=(("xleave", "1"),))
    first = one(s.datagram_received(asks, T2, 1.0))
    assert response(first).metadata == ()                 # nothing sent yet: nothing to report
    s.response_sent(NONCE, (False, True), T2 + 1000, T2 + 1500)
    assert response(one(s.datagram_received(request(), T2, 1.0))).metadata == ()
    assert response(one(s.datagram_received(request(metadata=(("xleave", "0"),)), T2, 1.0))).metadata == ()
    report = ("xleave-tx", format_xleave(NONCE, T2 + 1500))
    assert response(one(s.datagram_received(asks, T2, 1.0))).metadata == (report,)
    both = request(metadata_query=True, metadata=(("xleave", "1"),))
    assert response(one(s.datagram_received(both, T2, 1.0))).metadata == (("site", "lab"), report)


def test_legacy_tsq1() -> None:
    policy = ServerPolicy(legacy_alpn=True, metadata=(("site", "lab"),), signer=SIGNER,
                          clock_quality=wire.ClockQuality(6, 1, 2), time_source=wire.TimeSourceInfo(1, 1))
    s = session(policy, "tsq/1")
    assert s.datagram_received(request(), T2, 1.0) == []  # datagrams are not part of tsq/1
    assert (s.stats.requests_datagram, s.stats.dropped) == (1, 1)
    s.response_sent(NONCE, (False, False), T2, T2 + 1)
    rich = request(pad=True, precision=True, metadata_query=True, metadata=(("xleave", "1"),))
    a = one(stream(s, 0, rich))
    assert isinstance(a, Answer) and a.late and a.path == (False, False)
    data = a.builder.finish()
    assert len(data) == 38                                # Nonce, T2, T3: TLVs 1-3 only
    assert [data[0], data[18], data[28]] == [wire.NONCE, wire.RECEIVE_TS, wire.SEND_TS]
    err = error_of(one(stream(s, 4, request(signature_request=True))))
    assert err.code == wire.ERR_AUTH_REQUIRED and err.reason == "signatures are not part of tsq/1"


def test_signatures() -> None:
    s = session()
    err = error_of(one(stream(s, 0, request(signature_request=True))))
    assert (err.code, err.reason) == (wire.ERR_AUTH_REQUIRED, "this server does not sign")
    assert s.datagram_received(request(signature_request=True), T2, 1.0) == [] and s.stats.dropped == 1
    s = session(ServerPolicy(signer=SIGNER, late_stamps=True))
    a = one(s.datagram_received(request(signature_request=True), T2, 1.0))
    assert isinstance(a, Answer) and a.path == (True, True)
    assert not a.late                                     # a signature covers T3: stamp it once
    assert Verifier({5: b"server-session-secret"}).verify_message(response(a))
    a = one(s.datagram_received(request(), T2, 1.0))      # not asked: not signed
    assert response(a).signature is None and a.path == (False, True) and a.late
    s = session(ServerPolicy(late_stamps=False))
    assert not one(s.datagram_received(request(), T2, 1.0)).late


def test_oversized_request_is_refused_once() -> None:
    s = session()
    sid = 8
    assert s.stream_data(sid, bytes(4000), False, T2) == []
    actions = s.stream_data(sid, bytes(MAX_REQUEST_BYTES - 4000 + 1), False, T2)
    assert len(actions) == 2
    err = error_of(actions[0])
    assert (err.code, err.reason) == (wire.ERR_MALFORMED, "request too long")
    assert actions[1] == StopStream(sid, QUIC_APP_REFUSED)
    assert (s.stats.oversized, s.stats.errors_sent) == (1, 1)
    assert s.packet_done(1.0) == []
    assert s.stream_data(sid, bytes(10_000), True, T2) == [] and s.packet_done(1.0) == []
    assert (s.stats.oversized, s.stats.errors_sent) == (1, 1)
    assert s.stream_data(12, bytes(MAX_REQUEST_BYTES), True, T2) == []   # exactly the limit: a request
    assert error_of(one(s.packet_done(1.0))).code == wire.ERR_MALFORMED


# ------------------------------------------------------------------------------------------ rate limits
def test_rate_limited_requests() -> None:
    s = session(limiter=RateLimiter(rate=1.0, burst=2.0, max_sources=10))
    assert isinstance(one(stream(s, 0, request())), Answer)
    assert isinstance(one(s.datagram_received(request(), T2, 1.0)), Answer)
    err = error_of(one(s.stream_data(4, request(), True, T2) + s.packet_done(1.5)))
    assert (err.code, err.reason) == (ERR_RATE_LIMITED, "rate limited")
    assert s.datagram_received(request(), T2, 1.5) == []              # silently, over datagrams
    assert (s.stats.rate_limited, s.stats.dropped, s.stats.errors_sent) == (2, 1, 1)
    assert isinstance(one(s.datagram_received(request(), T2, 2.0)), Answer)   # a token a second


def test_rate_limiter_buckets() -> None:
    lim = RateLimiter(rate=10.0, burst=3.0, max_sources=2)
    assert [lim.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow("a", 0.1)                            # 10 per second
    assert not lim.allow("a", 0.1)
    assert [lim.allow("a", 100.0) for _ in range(4)] == [True, True, True, False]   # never above burst
    assert lim.allow("b", 100.0)                          # a second source has its own bucket
    assert lim.allow("c", 100.0)                          # the table is full: forgotten, not refused
    assert lim.allow("a", 100.0)                          # ... and "a" was forgiven


# ------------------------------------------------------------------------------------------ stamps
def test_stamp_residual_estimate() -> None:
    r = StampResidual(size=20, warm=16)
    for v in (-1, 10_000_000, 50_000_000):
        r.add(v)                                          # negative, or a descheduled sender: ignored
    for i in range(15):
        r.add(9_000 + i)
    assert r.estimate_ns == 0                             # early samples are slow: not yet
    r.add(8_500)
    assert r.estimate_ns == 8_500 - r.margin_ns           # the minimum, less the margin
    for _ in range(20):
        r.add(12_000)
    assert r.estimate_ns == 12_000 - r.margin_ns          # the window moved on
    for _ in range(20):
        r.add(1_000)
    assert r.estimate_ns == 0                             # never negative


def test_answers_carry_the_paths_residual() -> None:
    paths = stamp_paths()
    assert set(paths) == {(False, False), (False, True), (True, False), (True, True)}
    s = ServerSession(ServerPolicy(), ServerStats(), paths, "192.0.2.1")
    s.handshake_completed("tsq")
    for _ in range(16):
        s.response_sent(NONCE, (False, True), T2, T2 + 7_000)
    assert one(s.datagram_received(request(), T2, 1.0)).compensation_ns == 5_000
    assert one(stream(s, 0, request())).compensation_ns == 0
    s.policy = ServerPolicy(compensate=False)
    assert one(s.datagram_received(request(), T2, 1.0)).compensation_ns == 0
    assert s.last_tx == (NONCE, T2 + 7_000)


# ------------------------------------------------------------------------------------------ policy
def test_policy_check_accepts_what_it_can_encode() -> None:
    ServerPolicy().check()
    ServerPolicy(signer=SIGNER, metadata=(("k" * 100, "v" * 100),) * 3,
                 clock_quality=wire.ClockQuality(6, 65535, 65535, "gps"),
                 time_source=wire.TimeSourceInfo(1, 2, "u-blox")).check()


class _HugeSigner:
    algorithm = 1
    key_id = 1
    signature_length = 300

    def sign(self, data: bytes) -> bytes:
        return bytes(300)


@pytest.mark.parametrize(("policy", "message"), [
    (ServerPolicy(metadata=(("k", "v" * 300),)), "metadata pair 'k' is 303 bytes"),
    (ServerPolicy(metadata=((1, "v"),)), "metadata key must be str, not int"),
    (ServerPolicy(metadata=(("k", "v", "w"),)), "must be (key, value) pairs"),
    (ServerPolicy(clock_quality=wire.ClockQuality(6, 70_000, 0)), "clock quality error_us"),
    (ServerPolicy(clock_quality=wire.ClockQuality(6, 0, 0, "\ud800")), "not encodable as UTF-8"),
    (ServerPolicy(time_source=wire.TimeSourceInfo(256, 0)), "stratum must be an integer"),
    (ServerPolicy(time_source=wire.TimeSourceInfo(1, 0, "x" * 300)), "Time Source Info (type 251) value"),
    (ServerPolicy(signer=_HugeSigner()), "300-byte signature does not fit a TLV"),
])
def test_policy_check_rejects_unencodable_options(policy: ServerPolicy, message: str) -> None:
    with pytest.raises(wire.WireError) as info:
        policy.check()
    assert message in str(info.value)
