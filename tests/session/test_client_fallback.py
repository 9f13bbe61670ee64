"""Draft §6.5: a client MUST be prepared to retry over streams. ClientSession switches a connection
from datagrams to streams when datagrams go unanswered while the server is otherwise heard from,
and never when datagrams were answered on it before."""

from __future__ import annotations

from typing import Any, Callable

from tsq.session.client import DATAGRAM_FALLBACK_TIMEOUTS, ClientOptions, ModeFallback
from tsq.session.errors import TsqTimeout

NS = 1_000_000_000
LINK = Callable[..., Any]


def datagrams_blackholed(link: Any) -> None:
    """A middlebox drops DATAGRAM frames; QUIC (ACKs, streams) still gets through."""
    link.lose_request = lambda out: out.mode == "datagram"


def test_unanswered_datagrams_switch_the_connection_to_streams(make_link: LINK) -> None:
    link = make_link()
    datagrams_blackholed(link)
    done = link.sample()
    # warm-up and measurement unanswered (DATAGRAM_FALLBACK_TIMEOUTS = 2), then the retry of the
    # same poll goes over a stream and is answered.
    assert [(o.key, o.mode) for o in link.sent] == [(1, "datagram"), (2, "datagram"), (3, "stream")]
    assert DATAGRAM_FALLBACK_TIMEOUTS == 2
    assert done.error is None and done.exchange.mode == "stream"
    assert link.fallbacks == [ModeFallback(
        "srv: 2 datagram requests unanswered while the server is reachable: using streams (draft §6.5)")]
    assert link.client.datagrams_fell_back and link.client.datagrams_ok
    link.sample()
    assert {o.mode for o in link.sent[3:]} == {"stream"}        # auto stays on streams
    assert link.client.connected and not link.stalls


def test_fallback_is_announced_once(make_link: LINK) -> None:
    link = make_link(ClientOptions(name="srv", interleaved=False))
    datagrams_blackholed(link)
    link.sample()
    done = link.sample("datagram")                  # asked for explicitly: still datagrams, still lost
    assert isinstance(done.error, TsqTimeout)
    assert {o.mode for o in link.sent[-3:]} == {"datagram"}
    assert len(link.fallbacks) == 1


def test_no_fallback_once_a_datagram_was_answered(make_link: LINK) -> None:
    link = make_link(ClientOptions(name="srv", interleaved=False))
    assert link.sample().exchange.mode == "datagram"
    datagrams_blackholed(link)
    for _ in range(5):
        assert isinstance(link.sample().error, TsqTimeout)
    assert link.client.datagram_unanswered == 15
    assert not link.fallbacks and not link.client.datagrams_fell_back
    assert {o.mode for o in link.sent} == {"datagram"}


def test_a_silent_server_is_stalled_not_fallen_back(make_link: LINK) -> None:
    link = make_link()
    datagrams_blackholed(link)
    link.acks = False                               # nothing at all comes back
    link.advance(10 * NS)                           # since the handshake: over 8 s of silence
    done = link.sample()
    assert isinstance(done.error, TsqTimeout)
    assert not link.fallbacks and len(link.stalls) == 1
    assert {o.mode for o in link.sent} == {"datagram"}


def test_fallback_needs_two_unanswered_datagrams(make_link: LINK) -> None:
    link = make_link(ClientOptions(name="srv", interleaved=False), serve=False)
    job = link.client.start_exchange(link.now())
    link.step()                                     # the warm-up times out: one unanswered
    assert link.client.datagram_unanswered == 1 and not link.fallbacks
    link.step()                                     # the measurement times out: two
    assert link.fallbacks and isinstance(link.done(job).error, TsqTimeout)
