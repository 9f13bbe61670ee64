"""ClientSession interleaved refinement and the paired exchange, against a real ServerSession (which
reports the kernel TX time of its previous answer in `xleave-tx`) or hand-made reports."""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from tsq import wire
from tsq.ntp import ntp64_to_unix_ns
from tsq.session.client import ClientOptions, Outgoing
from tsq.session.errors import TsqInvalidResponse
from tsq.sync.exchange import Exchange

NS = 1_000_000_000
MS = 1_000_000
US = 1_000
LINK = Callable[..., Any]


def basic_of(link: Any, out: Outgoing) -> Dict[str, int]:
    """The stamps of the server's answer to `out`, as the client read them."""
    [payload] = [p for o, p in link.replies if o.key == out.key]
    resp = wire.decode_response(payload)
    return {"t2": ntp64_to_unix_ns(resp.receive_ts, link.utc), "t3": ntp64_to_unix_ns(resp.send_ts, link.utc)}


def tx_of(link: Any, kit: Any, out: Outgoing) -> int:
    nonce = kit.request_nonce(out)
    [tx] = [t for n, t in link.tx_reports if n == nonce]
    return int(kit.ntp_round(tx))


def test_the_sample_is_the_previous_exchange_with_the_reported_t3(make_link: LINK, kit: Any) -> None:
    link = make_link(tx_lag_ns=8 * US)
    link.sample()
    previous = link.sent[-1]
    done = link.sample()
    assert len(link.sent) == 3 and done.interleaved and done.error is None   # one exchange a sample
    ex = done.exchange
    assert (ex.t1_raw, ex.t2_unix) == (link.t1[previous.key], basic_of(link, previous)["t2"])
    assert ex.t3_unix == tx_of(link, kit, previous) != basic_of(link, previous)["t3"]
    assert abs(ex.offset_ns - kit.UTC_MINUS_RAW) <= 1   # the true offset; the basic one is 4 µs off
    assert link.client.last_interleaved == ex
    assert link.sample().exchange.t1_raw == link.t1[3]  # each exchange returned once, in order


def test_the_first_interleaved_sample_is_the_refined_warmup(make_link: LINK, kit: Any) -> None:
    # What the code does today (as before tsq/session): the warm-up, "never a sample itself", comes
    # back completed by the measurement's report. docs/quic.md calls it discarded; reported.
    link = make_link()
    done = link.sample()
    warmup, _measured = link.sent
    assert done.interleaved and done.exchange.t1_raw == link.t1[warmup.key]
    assert done.exchange.t3_unix == tx_of(link, kit, warmup)


def test_a_report_naming_another_nonce_is_never_paired(make_link: LINK, kit: Any) -> None:
    link = make_link()
    link.sample()                                       # keys 1, 2; 2 awaits its report
    link.lose_reply = lambda out: out.key == 3          # the server answers 3 (and will report it) ...
    done = link.sample()
    assert [o.key for o in link.sent[2:]] == [3, 4, 5]
    # ... 4's answer names 3, which the client never saw: 4 stays basic and one more exchange is
    # made, whose report refines 4. Exchange 2 lost its report for good and is never returned.
    assert done.interleaved and done.exchange.t1_raw == link.t1[4]
    assert done.exchange.t3_unix == tx_of(link, kit, link.sent[3])


def test_reports_for_other_nonces_or_malformed_are_ignored(make_link: LINK, kit: Any) -> None:
    link = make_link(serve=False)
    link.warm()
    job = link.client.start_sample(link.now())
    reports = ["00" * 16 + ":0000000000000001", "nonsense", "", "zz:zz"]
    done = link.answer(job, metadata=(("xleave-tx", reports[0]),))
    # The server reports, but never the previous exchange: three exchanges, the last one basic.
    assert len(link.sent) == 2 + 3
    assert not done.interleaved and done.exchange.t1_raw == link.t1[link.sent[-1].key]
    for value in reports[1:]:
        done = link.answer(link.client.start_sample(link.now()), metadata=(("xleave-tx", value),))
        assert not done.interleaved and done.error is None


def warm_then_sample(link: Any) -> Tuple[int, Exchange, bytes]:
    """serve=False: warm up by hand, then start a sample whose request the test answers 2 ms later.
    Returns the job, the previous exchange (awaiting its report) and that exchange's nonce."""
    previous = link.warm().exchange
    nonce = wire.decode_request(link.sent[-1].data).nonce
    job = link.client.start_sample(link.now())
    link.pump()
    link.advance(2 * MS)
    return job, previous, nonce


def test_a_report_that_fails_the_checks_is_not_used(make_link: LINK, kit: Any) -> None:
    link = make_link(serve=False)
    job, previous, nonce = warm_then_sample(link)
    early = kit.format_xleave(nonce, previous.t2_unix - US)   # T3 before T2
    link.datagram(link.reply(link.sent[-1], metadata=(("xleave-tx", early),)))
    assert link.client.last_interleaved is None and link.done(job) is None   # another exchange
    assert len(link.sent) == 4


def test_a_rejected_answer_refines_nothing(make_link: LINK, kit: Any) -> None:
    """Draft §6.6: nothing of an invalid response is used, not even its report of the previous T3."""
    link = make_link(serve=False)
    job, _previous, nonce = warm_then_sample(link)
    report = kit.format_xleave(nonce, _previous.t3_unix + 3 * US)
    out = link.sent[-1]
    link.datagram(link.reply(out, t2=link.utc, t3=link.utc - US, metadata=(("xleave-tx", report),)))
    done = link.done(job)
    assert link.discarded == ["srv: T3 earlier than T2 (§6.6)"]
    assert isinstance(done.error, TsqInvalidResponse) and not done.interleaved
    assert link.client.previous is None          # and it cannot be refined later either


def test_a_report_in_a_response_that_fails_the_nonce_check_is_not_used(make_link: LINK, kit: Any) -> None:
    link = make_link(peer_datagrams=False, serve=False)
    job, _previous, nonce = warm_then_sample(link)
    report = kit.format_xleave(nonce, link.utc - MS)
    out = link.sent[-1]
    link.stream(out, [link.reply(out, nonce=bytes(16), metadata=(("xleave-tx", report),))], fin=True)
    done = link.done(job)
    assert isinstance(done.error, TsqInvalidResponse) and not done.interleaved
    assert not link.client.xleave_seen


def test_a_report_on_the_first_answer_pairs_nothing(make_link: LINK, kit: Any) -> None:
    link = make_link(serve=False)
    job = link.client.start_exchange(link.now())
    link.pump()
    link.advance(2 * MS)
    link.datagram(link.reply(link.sent[0], metadata=(("xleave-tx", "00" * 16 + ":01"),)))
    assert link.client.xleave_seen and link.client.last_interleaved is None
    link.advance(2 * MS)
    link.datagram(link.reply(link.sent[1]))
    assert link.done(job).exchange.t1_raw == link.t1[2]


def test_no_pairing_across_modes(make_link: LINK) -> None:
    link = make_link()
    link.sample("datagram")                             # keys 1, 2 (datagrams)
    done = link.sample("stream")
    # 3's answer reports 2, a datagram exchange: a stream sample is never completed with it.
    assert [(o.key, o.mode) for o in link.sent[2:]] == [(3, "stream"), (4, "stream")]
    assert done.interleaved and done.exchange.mode == "stream" and done.exchange.t1_raw == link.t1[3]


def test_without_interleaving_nothing_is_asked_or_reported(make_link: LINK) -> None:
    link = make_link(ClientOptions(name="srv", interleaved=False, paired=True))
    for _ in range(3):
        done = link.sample()
        assert not done.interleaved
    assert all(("xleave", "1") not in wire.decode_request(o.data).metadata for o in link.sent)
    reported = [k for _, p in link.replies for k, _v in wire.decode_response(p).metadata]
    assert "xleave-tx" not in reported
    assert len(link.sent) == 4                          # paired needs interleaving: no partners
    assert not link.client.xleave_seen


def test_paired_mode_returns_the_second_of_the_previous_pair(make_link: LINK, kit: Any) -> None:
    link = make_link(ClientOptions(name="srv", paired=True))
    first = link.sample()
    assert [o.key for o in link.sent] == [1, 2, 3]      # warm-up, measurement, its warm partner
    assert first.interleaved and first.exchange.t1_raw == link.t1[1]
    second = link.sample()
    assert [o.key for o in link.sent[3:]] == [4, 5]
    assert second.interleaved and second.exchange.t1_raw == link.t1[3]   # 3: the partner of 2
    assert second.exchange.t3_unix == tx_of(link, kit, link.sent[2])
    third = link.sample()
    assert third.exchange.t1_raw == link.t1[5]


def test_paired_mode_survives_a_lost_partner(make_link: LINK) -> None:
    link = make_link(ClientOptions(name="srv", paired=True))
    link.sample()                                       # 1, 2, 3
    link.lose_reply = lambda out: out.key == 5          # the partner of the second call
    second = link.sample()                              # 4, 5 (lost: not an error)
    assert second.error is None and second.exchange.t1_raw == link.t1[3]
    third = link.sample()
    # 6's report names 5, which never arrived: 6 stays basic; its partner 7 refines 6, but the job
    # wants a refinement made before its partner, so a second pair follows and 7 is the sample.
    assert [o.key for o in link.sent[5:]] == [6, 7, 8, 9]
    assert third.interleaved and third.exchange.t1_raw == link.t1[7]


def test_an_answer_whose_only_fault_is_a_late_basic_t3_still_delivers_its_report(
        make_link: LINK, kit: Any) -> None:
    """A basic T3 so late that the round trip comes out non-positive (a server whose late-T3 stamp
    lagged) fails §6.6 for that exchange only: its kernel-stamped report of the previous one holds."""
    link = make_link(serve=False)
    job, previous, nonce = warm_then_sample(link)
    reported = previous.t3_unix + 3 * US
    out = link.sent[-1]
    link.datagram(link.reply(out, t2=link.utc - MS, t3=link.utc + 5 * MS,
                             metadata=(("xleave-tx", kit.format_xleave(nonce, reported)),)))
    done = link.done(job)
    assert done is not None and done.error is None and done.interleaved
    assert done.exchange.t1_raw == previous.t1_raw
    assert done.exchange.t3_unix == kit.ntp_round(reported)
