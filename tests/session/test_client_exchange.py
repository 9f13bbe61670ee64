"""ClientSession: warm-up, stamps, deadlines, retry after a loss, stall detection, connection loss,
modes, ALPN and raw jobs, in simulated time against a real ServerSession or hand-made bytes."""

from __future__ import annotations

import random
from typing import Any, Callable

import pytest

from tsq import wire
from tsq.session.client import MIN_RESPONSE_TIMEOUT_NS, ClientOptions, JobDone, Outgoing
from tsq.session.errors import (
    TsqHandshakeError,
    TsqInvalidResponse,
    TsqModeUnavailable,
    TsqTimeout,
    TsqUnreachable,
)
from tsq.session.server import ServerPolicy

NS = 1_000_000_000
MS = 1_000_000
US = 1_000
LINK = Callable[..., Any]


def basic(name: str = "srv", **kw: Any) -> ClientOptions:
    """Options without interleaving: every sample is one basic exchange."""
    return ClientOptions(name=name, interleaved=False, **kw)


# ------------------------------------------------------------------------------------------ warm-up
def test_first_exchange_after_the_handshake_is_a_discarded_warmup(make_link: LINK) -> None:
    link = make_link(basic())
    done = link.exchange()
    assert [o.key for o in link.sent] == [1, 2]          # warm-up, then the measured exchange
    assert done.error is None and not done.interleaved
    assert done.exchange.t1_raw == link.t1[2]            # the sample is the second exchange
    done = link.exchange()
    assert [o.key for o in link.sent] == [1, 2, 3]       # no warm-up on a warm connection
    assert done.exchange.t1_raw == link.t1[3]


def test_a_lost_or_rejected_warmup_does_not_fail_the_exchange(make_link: LINK) -> None:
    link = make_link(basic())
    link.lose_request = lambda out: out.key == 1
    done = link.exchange()
    assert done.error is None and done.exchange.t1_raw == link.t1[2]
    assert done.exchange.t4_raw - link.t1[1] > NS        # waited the full first timeout (1 s)

    link = make_link(basic(), serve=False)
    job = link.client.start_exchange(link.now())
    link.pump()
    out = link.sent[0]
    link.datagram(link.reply(out, t2=link.utc, t3=link.utc - 1))   # §6.6 reject of the warm-up
    assert link.discarded == ["srv: T3 earlier than T2 (§6.6)"]
    assert link.done(job) is None and len(link.sent) == 2
    link.advance(2 * MS)
    link.datagram(link.reply(link.sent[1]))
    assert link.done(job).exchange is not None


def test_basic_sample_measures_the_path(make_link: LINK, kit: Any) -> None:
    link = make_link(basic(), delay_ns=3 * MS, turnaround_ns=40 * US, tx_lag_ns=0)
    ex = link.sample().exchange
    assert ex.mode == "datagram" and ex.server == "srv"
    assert abs(ex.offset_ns - kit.UTC_MINUS_RAW) <= 1           # symmetric path: the true offset
    assert abs(ex.delay_ns - 6 * MS) <= 1                       # both legs, turnaround excluded
    assert ex.t3_unix - ex.t2_unix == pytest.approx(40 * US, abs=1)


def test_kernel_stamps_are_preferred_and_flagged(make_link: LINK) -> None:
    link = make_link(basic(), serve=False)
    link.warm()
    job = link.client.start_exchange(link.now())
    link.pump()
    out = link.sent[-1]
    link.client.tx_stamp(out.key, link.t1[out.key] + 7 * US)   # the kernel's TX stamp, a bit later
    link.advance(2 * MS)
    link.datagram(link.reply(out), kernel=False)
    ex = link.done(job).exchange
    assert ex.t1_raw == link.t1[out.key] + 7 * US and ex.kernel_t1
    assert ex.t4_raw == link.raw and not ex.kernel_t4

    job = link.client.start_exchange(link.now())
    link.pump()
    link.advance(2 * MS)
    link.datagram(link.reply(link.sent[-1]))
    ex = link.done(job).exchange
    assert ex.t1_raw == link.t1[link.sent[-1].key] and not ex.kernel_t1 and ex.kernel_t4
    # Stamps of messages no longer pending are ignored (a late kernel TX stamp, a re-report).
    events = list(link.events)
    link.client.tx_stamp(link.sent[-1].key, 1)
    link.client.sent(link.sent[-1].key, 1)
    link.pump()
    assert link.events == events
    assert link.client.pending_keys() == []


def test_an_answer_before_the_request_left_is_discarded(make_link: LINK) -> None:
    link = make_link(basic(), serve=False)
    link.warm()
    job = link.client.start_exchange(link.now())
    [out] = link.client.take_outgoing()      # the edge could not flush it: no sent() report
    assert isinstance(out, Outgoing)
    link.client.sent(out.key, None)          # "left, but no time was read" is no report either
    link.datagram(link.reply(out))
    done = link.done(job)
    assert isinstance(done.error, TsqInvalidResponse) and "before the request was sent" in str(done.error)
    assert link.discarded == [str(done.error)]


# ------------------------------------------------------------------------------------------ deadlines
def test_answer_deadline_follows_the_slowest_recent_round_trip(make_link: LINK) -> None:
    link = make_link(basic(timeout_ns=2 * NS), delay_ns=MS)
    client = link.client
    assert client.next_deadline() is None
    assert client.response_timeout_ns() == 2 * NS             # nothing measured yet: the cap
    job = client.start_exchange(link.now())
    link.pump()
    assert client.next_deadline() == link.raw + 2 * NS
    link.run(job)
    assert client.next_deadline() is None
    assert client.response_timeout_ns() == MIN_RESPONSE_TIMEOUT_NS   # 8 x 2 ms is below the floor
    link.delay_ns = 50 * MS
    link.exchange()
    assert client.response_timeout_ns() == pytest.approx(8 * 100 * MS, rel=1e-3)
    link.delay_ns = 200 * MS
    link.exchange()
    assert client.response_timeout_ns() == 2 * NS             # 8 x 400 ms is above the cap
    link.delay_ns = MS
    for _ in range(7):
        link.exchange()
    assert client.response_timeout_ns() == 2 * NS             # 400 ms is still among the last eight
    link.exchange()
    assert client.response_timeout_ns() == MIN_RESPONSE_TIMEOUT_NS


# ------------------------------------------------------------------------------------------ retry
@pytest.mark.parametrize("lost", [1, 2])
def test_lost_datagrams_are_retried_at_once_within_the_poll(make_link: LINK, lost: int) -> None:
    link = make_link(basic())
    link.sample()                                     # warm-up and one sample: RTT known
    first = len(link.sent) + 1
    link.lose_request = lambda out: first <= out.key < first + lost
    start = link.raw
    done = link.sample()
    assert done.error is None
    assert [o.key for o in link.sent[first - 1:]] == list(range(first, first + lost + 1))
    assert done.exchange.t1_raw == link.t1[first + lost]     # the retry is the sample
    assert done.exchange.t1_raw - start >= lost * MIN_RESPONSE_TIMEOUT_NS  # one timeout per loss
    assert link.client.connected and not link.stalls


def test_three_lost_exchanges_fail_the_poll_without_a_fourth(make_link: LINK) -> None:
    link = make_link(basic())
    link.sample()
    n = len(link.sent)
    link.lose_reply = lambda out: True                 # answers lost; the server's ACKs still come
    done = link.sample()
    assert isinstance(done.error, TsqTimeout) and "no datagram response within 0.25 s" in str(done.error)
    assert len(link.sent) == n + 3
    assert link.client.connected and not link.stalls


def test_timeout_message_counts_discarded_responses(make_link: LINK) -> None:
    link = make_link(basic(), serve=False)
    link.warm()
    job = link.client.start_exchange(link.now())
    link.pump()
    link.datagram(link.reply(link.sent[0], nonce=bytes(16)))   # nobody asked for this nonce
    link.run(job)
    assert "1 response(s) discarded" in str(link.done(job).error)


# ------------------------------------------------------------------------------------------ stall
def test_stall_needs_three_timeouts_and_eight_seconds_of_silence(make_link: LINK) -> None:
    link = make_link(basic())
    link.sample()
    link.acks = False                                   # the server vanished: nothing comes back
    link.lose_request = lambda out: True
    done = link.sample()                                # three timeouts, but under a second of silence
    assert isinstance(done.error, TsqTimeout) and link.client.connected and not link.stalls
    link.advance(10 * NS)                               # idle until the next poll
    n = len(link.sent)
    done = link.sample()
    assert len(link.sent) == n + 1                      # 4th timeout in a row, 10 s silent: stalled
    assert [s.reason for s in link.stalls] == ["srv: connection stalled"]
    assert isinstance(done.error, TsqTimeout) and not link.client.connected
    done = link.sample()                                # a dead session fails at once, sends nothing
    assert len(link.sent) == n + 1 and "stalled" in str(done.error)


def test_silence_alone_does_not_stall_before_the_third_timeout(make_link: LINK) -> None:
    link = make_link(basic())
    link.sample()
    link.acks = False
    link.lose_request = lambda out: True
    link.advance(20 * NS)                               # long silent idle: nothing pending, no stall
    job = link.client.start_sample(link.now())
    link.step()
    link.step()                                         # timeout 1: retried
    link.step()
    link.step()                                         # timeout 2: retried
    assert not link.stalls and link.done(job) is None
    link.run(job)                                       # timeout 3 stalls
    assert len(link.stalls) == 1 and isinstance(link.done(job).error, TsqTimeout)
    assert not link.client.connected


def test_no_stall_while_acks_keep_coming(make_link: LINK) -> None:
    link = make_link(basic())
    link.sample()
    link.lose_reply = lambda out: True                  # every TSQ answer lost, every ACK heard
    for _ in range(20):
        done = link.sample()
        assert isinstance(done.error, TsqTimeout)
        link.advance(NS)
    assert link.client.timeouts_in_a_row == 60
    assert link.client.connected and not link.stalls and not link.fallbacks


def test_no_stall_under_random_loss(make_link: LINK) -> None:
    rng = random.Random(7)
    link = make_link(basic())
    link.sample()
    link.lose_request = lambda out: rng.random() < 0.3      # each way, datagrams (QUIC never
    link.lose_reply = lambda out: rng.random() < 0.3        # loses stream data for good)
    results = []
    for _ in range(150):
        results.append(link.sample().error is None)
        link.advance(NS)
    assert link.client.connected and not link.stalls and not link.fallbacks
    # An exchange is lost with p = 0.51; a poll fails only when all three of its exchanges are.
    assert 0.8 < sum(results) / len(results) < 1.0


def test_stream_timeout_stalls_at_once(make_link: LINK) -> None:
    # QUIC retransmits stream data: an unanswered stream request means the connection is dead.
    link = make_link(basic(), peer_datagrams=False)
    link.sample()
    link.lose_request = lambda out: True
    n = len(link.sent)
    done = link.sample()
    assert len(link.sent) == n + 1 and len(link.stalls) == 1
    assert isinstance(done.error, TsqTimeout) and not link.client.connected


def test_stall_during_the_warmup_fails_the_job_without_a_measurement(make_link: LINK) -> None:
    link = make_link(basic(), peer_datagrams=False)
    link.lose_request = lambda out: True
    done = link.exchange()
    assert len(link.sent) == 1                          # the measured request is never sent
    assert isinstance(done.error, TsqTimeout) and "stalled" in str(done.error)


def test_job_started_before_the_handshake_times_out(make_link: LINK) -> None:
    link = make_link(basic(), connect=False, serve=False)
    assert not link.client.connected
    done = link.run(link.client.start_exchange(link.now(), "stream"))
    assert isinstance(done.error, TsqTimeout) and len(link.stalls) == 1 and len(link.sent) == 1


def test_one_stall_expires_every_overdue_request(make_link: LINK) -> None:
    link = make_link(basic(), peer_datagrams=False, serve=False)
    link.warm()
    jobs = [link.client.start_exchange(link.now()) for _ in range(2)]
    link.pump()
    link.advance(5 * NS)                               # both deadlines passed by the time the timer runs
    link.client.handle_timer(link.now())
    errors = [link.done(j).error for j in jobs]
    assert all(isinstance(e, TsqTimeout) for e in errors) and len(link.stalls) == 1
    assert "connection stalled" in str(errors[1])      # failed by the stall, not timed out again
    assert link.client.pending_keys() == []


# ------------------------------------------------------------------------------------------ connection
def test_connection_lost_fails_every_pending_job_with_the_first_error(make_link: LINK) -> None:
    link = make_link(basic(), serve=False)
    jobs = [link.client.start_sample(link.now()), link.client.start_sample(link.now())]
    link.pump()
    assert len(link.client.pending_keys()) == 2
    gone = TsqUnreachable("srv: connection closed: bye")
    link.client.connection_lost(gone)
    link.client.connection_lost(TsqUnreachable("later"))
    assert [link.done(j).error for j in jobs] == [gone, gone]
    assert link.client.dead is gone and not link.client.connected
    assert link.client.next_deadline() is None
    assert link.exchange().error is gone


def test_stream_reset_fails_the_request(make_link: LINK) -> None:
    link = make_link(basic(), peer_datagrams=False, serve=False)
    job = link.client.start_sample(link.now())
    link.pump()
    link.client.stream_reset(link.now(), 99)            # not ours: ignored
    link.client.stream_reset(link.now(), link.sent[0].key)
    link.pump()
    assert link.done(job) is None                        # the warm-up failed; the measurement goes out
    link.client.stream_reset(link.now(), link.sent[1].key)
    err = link.done(job).error
    assert isinstance(err, TsqInvalidResponse) and "reset the stream" in str(err)


# ------------------------------------------------------------------------------------------ modes
def test_modes(make_link: LINK) -> None:
    link = make_link(basic())
    with pytest.raises(ValueError, match="mode must be one of"):
        link.client.start_sample(link.now(), "carrier-pigeon")
    assert link.sample("auto").exchange.mode == "datagram"
    assert link.sample("stream").exchange.mode == "stream"
    assert link.sample("datagram").exchange.mode == "datagram"

    link = make_link(basic(), peer_datagrams=False)
    assert not link.client.datagrams_ok
    with pytest.raises(TsqModeUnavailable):
        link.client.start_exchange(link.now(), "datagram")
    with pytest.raises(TsqModeUnavailable):
        link.client.start_raw(link.now(), b"x", "datagram")
    assert link.sample().exchange.mode == "stream"

    link = make_link(basic(), offer_datagrams=False)     # this client never offers DATAGRAM
    assert not link.client.datagrams_ok and link.sample().exchange.mode == "stream"


def test_a_datagram_job_queued_before_the_handshake_fails_when_the_peer_has_none(make_link: LINK) -> None:
    link = make_link(basic(), connect=False, peer_datagrams=False, serve=False)
    job = link.client.start_exchange(link.now(), "datagram")     # allowed: nothing is known yet
    link.pump()
    link.connect()                                               # the server disables DATAGRAM
    link.advance(2 * NS)
    link.client.handle_timer(link.now())                         # the warm-up times out ...
    err = link.done(job).error                                   # ... and the measurement cannot go
    assert isinstance(err, TsqModeUnavailable) and len(link.sent) == 1


# ------------------------------------------------------------------------------------------ ALPN
def test_alpn_tsq1_is_refused_unless_allowed(make_link: LINK) -> None:
    link = make_link(basic(), connect=False)
    with pytest.raises(TsqHandshakeError, match="--allow-legacy-alpn"):
        link.client.handshake_completed(link.now(), "tsq/1", True)
    for alpn in (None, "h3", "tsq/2"):
        with pytest.raises(TsqHandshakeError, match="not 'tsq'") as info:
            link.client.handshake_completed(link.now(), alpn, True)
        assert "--allow-legacy-alpn" not in str(info.value)
    assert not link.client.handshake_done and not link.client.connected


def test_alpn_tsq1_is_refused_when_a_signature_is_required(make_link: LINK) -> None:
    link = make_link(basic(allow_legacy=True, require_signature=True), connect=False)
    with pytest.raises(TsqHandshakeError, match="cannot carry the signatures"):
        link.client.handshake_completed(link.now(), "tsq/1", True)
    assert link.client.options.alpns() == ["tsq", "tsq/1"]
    assert basic().alpns() == ["tsq"]


def test_tsq1_speaks_the_legacy_request_over_streams(make_link: LINK, kit: Any) -> None:
    policy = ServerPolicy(legacy_alpn=True, metadata=(("site", "lab"),))
    link = make_link(ClientOptions(name="old", allow_legacy=True), policy, alpn="tsq/1")
    assert link.client.alpn == "tsq/1" and not link.client.datagrams_ok   # no DATAGRAM in tsq/1
    done = link.sample()
    assert done.error is None and done.exchange.mode == "stream"
    assert all(o.data == wire.encode_request(wire.Request(kit.request_nonce(o))) for o in link.sent)
    assert not done.interleaved and done.exchange.metadata == ()


# ------------------------------------------------------------------------------------------ raw jobs
def test_raw_stream_job_returns_the_answer_bytes_at_fin(make_link: LINK) -> None:
    link = make_link(basic())
    request = wire.encode_request(wire.Request(bytes(range(16))))
    done = link.run(link.client.start_raw(link.now(), request))
    assert done.payload == link.replies[-1][1]
    assert wire.decode_response(done.payload).nonce == bytes(range(16))
    done = link.run(link.client.start_raw(link.now(), b"\x01\x02"))      # garbage: an Error TLV back
    assert isinstance(wire.decode_response(done.payload), wire.ErrorResponse)


def test_raw_stream_job_waits_for_fin_and_gives_none_on_failure(make_link: LINK) -> None:
    link = make_link(basic(), serve=False)
    job = link.client.start_raw(link.now(), b"\x01\x10" + bytes(16))
    link.pump()
    out = link.sent[0]
    link.stream(out, [link.reply(out)])                  # a whole response, but no FIN yet
    assert link.done(job) is None
    link.fin(out)
    assert link.done(job).payload == link.reply(out)

    job = link.client.start_raw(link.now(), b"\x01\x10" + bytes(16))
    link.pump()
    link.client.stream_reset(link.now(), link.sent[1].key)
    done = link.done(job)
    assert done.payload is None and done.error is None


def test_raw_datagram_is_fire_and_forget(make_link: LINK) -> None:
    link = make_link(basic(), serve=False)
    job = link.client.start_raw(link.now(), b"\x01\x10" + bytes(16), "datagram")
    done = link.done(job)
    assert isinstance(done, JobDone) and done.payload is None and done.error is None
    assert link.sent[0].mode == "datagram" and link.client.pending_keys() == []
    link.datagram(link.reply(link.sent[0]))              # whatever comes back is unsolicited
    assert link.discarded == ["srv: datagram response with an unknown nonce discarded (§6.6)"]


def test_raw_job_on_a_dead_connection(make_link: LINK) -> None:
    link = make_link(basic())
    link.client.connection_lost(TsqUnreachable("gone"))
    done = link.run(link.client.start_raw(link.now(), b"\x01"))
    assert done.payload is None and done.error is None and link.sent == []

