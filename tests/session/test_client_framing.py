"""Stream framing on the client (docs/wire.md "Stream framing"): a response is complete when its
bytes hold what the request asked for, checked at the end of each packet; FIN is optional; T4 is
the RX time of the packet that carried the last byte."""

from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsq import wire
from tsq.auth import HmacSigner, Verifier
from tsq.session.client import ClientOptions, Outgoing, StopReading
from tsq.session.errors import TsqInvalidResponse, TsqServerError
from tsq.session.framing import MAX_RESPONSE_BYTES, Expectation, request_complete, response_complete
from tsq.session.server import ServerPolicy

MS = 1_000_000
LINK = Callable[..., Any]
SECRET = b"framing-test-secret!"
SIGNER = HmacSigner(7, SECRET)
FIXED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # make_link is stateless


def stream_link(make_link: LINK, signed: bool = False, precision: bool = True) -> Any:
    # Requests of a fixed 256 B (room for any reply these tests build), so every Precision reply
    # can be padded to its request's length.
    opts = ClientOptions(name="srv", interleaved=False, precision=precision, require_signature=signed,
                         verifier=Verifier({7: SECRET}) if signed else None, precision_size=256)
    link = make_link(opts, peer_datagrams=False, serve=False)
    link.answer(link.client.start_exchange(link.now()), signer=SIGNER if signed else None)
    return link


def ask(link: Any) -> Tuple[int, Outgoing]:
    job = link.client.start_exchange(link.now())
    link.pump()
    return job, link.sent[-1]


# Nonce, T2 and T3 end here; the Precision ack follows. A response cut exactly there parses as a
# whole response (see test_a_cut_between_t3_and_the_ack).
T3_END = wire.SEND_TS_OFFSET + 8


def split(data: bytes, cuts: Sequence[int]) -> List[bytes]:
    points = [0, *sorted(c for c in set(cuts) if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


def deliver_checking(link: Any, job: int, out: Outgoing, chunks: List[bytes], fin_with_last: bool) -> int:
    """Each chunk in its own packet, 1 ms apart: the job must end with the last one, not before."""
    rx = 0
    for i, chunk in enumerate(chunks):
        link.advance(MS)
        last = i == len(chunks) - 1
        [rx] = link.stream(out, [chunk], fin=fin_with_last and last)
        assert (link.done(job) is not None) == last, f"complete after {i + 1} of {len(chunks)} pieces"
    return rx


@FIXED
@given(cuts=st.lists(st.integers(1, 300), max_size=12), signed=st.booleans(),
       fin=st.sampled_from(["with-last", "later", "never"]))
def test_a_response_split_anywhere_completes_with_its_last_byte(make_link: LINK, cuts: List[int],
                                                                signed: bool, fin: str) -> None:
    link = stream_link(make_link, signed)
    policy = ServerPolicy(signer=SIGNER if signed else None, metadata=(("site", "lab"), ("leap", "none")))
    job, out = ask(link)
    link.advance(MS)
    data = link.built_reply(out, policy)
    assert len(data) == len(out.data) == 256           # Precision Mode: padded to the request
    rx = deliver_checking(link, job, out, split(data, cuts), fin == "with-last")
    done = link.done(job)
    assert done.error is None and done.exchange.t4_raw == rx
    assert done.exchange.metadata == (("leap", "none"), ("site", "lab"))
    if fin == "later":
        events = list(link.events)
        link.advance(5 * MS)
        link.fin(out)                                   # a late FIN changes nothing
        assert link.events == events and link.done(job).exchange.t4_raw == rx


def test_every_byte_boundary(make_link: LINK) -> None:
    link = stream_link(make_link)
    job, out = ask(link)
    data = link.built_reply(out, ServerPolicy())
    rx = deliver_checking(link, job, out, split(data, range(len(data))), False)
    assert link.done(job).exchange.t4_raw == rx


def test_a_cut_between_t3_and_the_ack(make_link: LINK) -> None:
    """A Precision response cut right after T3 parses whole: it must still wait for the rest."""
    link = stream_link(make_link)
    job, out = ask(link)
    data = link.built_reply(out, ServerPolicy())
    rx = deliver_checking(link, job, out, [data[:T3_END], data[T3_END:]], False)
    assert link.done(job).exchange.t4_raw == rx


def test_precision_mode_waits_for_the_padding(make_link: LINK) -> None:
    link = stream_link(make_link)
    job, out = ask(link)
    link.advance(MS)
    data = link.built_reply(out, ServerPolicy(metadata=(("site", "lab"),)))
    resp = wire.decode_response(data)
    assert resp.precision and resp.padding > 0
    unpadded = len(data) - resp.padding                 # ack and Metadata there, Padding not yet
    assert wire.decode_response(data[:unpadded]).precision
    rx = deliver_checking(link, job, out, [data[:unpadded], data[unpadded:-1], data[-1:]], False)
    assert link.done(job).exchange.t4_raw == rx


def test_pieces_in_one_packet_complete_at_its_end(make_link: LINK) -> None:
    link = stream_link(make_link)
    job, out = ask(link)
    link.advance(MS)
    data = link.built_reply(out, ServerPolicy())
    for piece in split(data, [10, 100, 200]):
        link.client.stream_data(out.key, piece, False, link.raw, True)
    link.pump()
    assert link.done(job) is None                       # completion is decided per packet
    link.client.packet_done(link.now())
    assert link.done(job).exchange.t4_raw == link.raw


def test_without_precision_metadata_is_not_waited_for(make_link: LINK) -> None:
    link = stream_link(make_link, precision=False)
    job, out = ask(link)
    link.advance(MS)
    data = link.built_reply(out, ServerPolicy(metadata=(("site", "lab"),)))
    head = wire.SEND_TS_OFFSET + 8                      # Nonce, T2, T3: a whole response already
    rx = deliver_checking(link, job, out, [data[:head - 1], data[head - 1:head]], False)
    link.stream(out, [data[head:]], fin=True)           # the Metadata TLV comes too late to matter
    done = link.done(job)
    assert done.exchange.t4_raw == rx and done.exchange.metadata == ()


def test_fin_completes_what_arrived_and_t4_stays_the_last_data_packet(make_link: LINK) -> None:
    link = stream_link(make_link)
    job, out = ask(link)
    link.advance(MS)
    # Acknowledged Precision Mode, but not padded: complete only when the stream says so.
    data = link.reply(out, precision=True)
    [rx] = link.stream(out, [data])
    assert link.done(job) is None
    link.advance(3 * MS)
    link.fin(out)
    done = link.done(job)
    assert done.error is None and done.exchange.t4_raw == rx


def test_fin_with_garbage_is_a_malformed_response(make_link: LINK) -> None:
    link = stream_link(make_link)
    job, out = ask(link)
    link.advance(MS)
    link.stream(out, [b"\x01\x10" + bytes(5)])
    assert link.done(job) is None                       # not a message yet
    link.fin(out)
    err = link.done(job).error
    assert isinstance(err, TsqInvalidResponse) and "malformed response" in str(err)
    assert link.discarded == [str(err)]


def test_an_error_tlv_alone_is_complete(make_link: LINK) -> None:
    link = stream_link(make_link)
    job, out = ask(link)
    link.stream(out, [wire.encode_error(wire.ERR_UNSUPPORTED_TLV, "no such TLV")])    # no FIN
    err = link.done(job).error
    assert isinstance(err, TsqServerError) and (err.code, err.reason) == (2, "no such TLV")
    assert str(err) == "srv: server error 2: no such TLV"


def test_signature_required_waits_for_the_signature_block(make_link: LINK) -> None:
    link = stream_link(make_link, signed=True)
    job, out = ask(link)
    link.advance(MS)
    signed = link.built_reply(out, ServerPolicy(signer=SIGNER))
    body = signed[:-(2 + 7 + SIGNER.signature_length)]
    assert wire.decode_response(body).signature is None   # a whole response, but unsigned so far
    link.stream(out, [body])
    assert link.done(job) is None
    link.advance(MS)
    [rx] = link.stream(out, [signed[len(body):]])
    done = link.done(job)
    assert done.error is None and done.exchange.t4_raw == rx

    job, out = ask(link)                                 # an Error TLV waits for its signature too
    error = wire.encode_error(wire.ERR_MALFORMED, "bad", SIGNER)
    link.stream(out, [error[:-10]])
    link.stream(out, [error[-10:-1]])
    assert link.done(job) is None
    link.stream(out, [error[-1:]])
    assert isinstance(link.done(job).error, TsqServerError)


def test_oversized_response_is_refused(make_link: LINK) -> None:
    link = stream_link(make_link)
    job, out = ask(link)
    junk = bytes([0x40, 0]) * (MAX_RESPONSE_BYTES // 2)     # never a response: no Nonce first
    link.stream(out, [junk])
    assert link.done(job) is None and link.stops == []  # exactly the limit: still waiting
    link.stream(out, [b"\x00"])
    err = link.done(job).error
    assert isinstance(err, TsqInvalidResponse)
    assert str(err) == f"srv: stream response exceeds {MAX_RESPONSE_BYTES} bytes: refused"
    assert link.stops == [StopReading(out.key)]
    events = list(link.events)
    link.stream(out, [b"\x00" * 100], fin=True)             # whatever still arrives is ignored
    assert link.stops == [StopReading(out.key)] and link.events == events

    raw = link.client.start_raw(link.now(), b"\x01\x10" + bytes(16))
    link.pump()
    link.stream(link.sent[-1], [junk + b"\x00"])
    assert link.done(raw).payload is None and link.stops[-1] == StopReading(link.sent[-1].key)


def test_bytes_for_unknown_or_datagram_requests_are_ignored(make_link: LINK) -> None:
    link = make_link(ClientOptions(name="srv", interleaved=False), serve=False)
    link.warm()
    job = link.client.start_exchange(link.now())
    link.pump()
    out = link.sent[-1]
    assert out.mode == "datagram"
    link.client.stream_data(out.key, link.reply(out), True, link.raw, True)   # not a stream request
    link.client.stream_data(999, b"\x01", True, link.raw, True)
    link.client.stream_data(out.key, b"", False, link.raw, True)
    link.client.packet_done(link.now())
    assert link.done(job) is None and link.discarded == []


# ------------------------------------------------------------------------------------------ the rules
def test_request_complete() -> None:
    req = wire.encode_request(wire.pad_request(wire.Request(bytes(16), precision=True)))
    assert request_complete(req)
    assert not request_complete(req[:17])
    assert request_complete(req[:20])                   # Nonce + Precision: a whole request already
    assert not request_complete(b"")


@pytest.mark.parametrize(("expect", "message", "complete"), [
    (Expectation(), wire.encode_error(1, "x"), True),
    (Expectation(signature=True), wire.encode_error(1, "x"), False),
    (Expectation(signature=True), wire.encode_error(1, "x", SIGNER), True),
    (Expectation(signature=True), wire.encode_response(wire.Response(bytes(16), 1, 2)), False),
    (Expectation(signature=True), wire.encode_response(wire.Response(bytes(16), 1, 2), SIGNER), True),
    (Expectation(40, precision=True), wire.encode_response(wire.Response(bytes(16), 1, 2, precision=True)),
     True),                                                           # 40 bytes: as long as the request
    (Expectation(256, precision=True), wire.encode_response(wire.Response(bytes(16), 1, 2, precision=True)),
     False),
    (Expectation(256, precision=True),
     wire.encode_response(wire.Response(bytes(16), 1, 2, precision=True, padding=2)), True),
    (Expectation(256, precision=True, signature=True),
     wire.encode_response(wire.Response(bytes(16), 1, 2, precision=True), SIGNER), True),
    # Declined (no ack) or cut after T3: short of the request, only FIN can tell, so not yet.
    (Expectation(256, precision=True), wire.encode_response(wire.Response(bytes(16), 1, 2)), False),
    (Expectation(), b"\x01\x10" + bytes(16), False),
])
def test_response_complete(expect: Expectation, message: bytes, complete: bool) -> None:
    assert response_complete(message, expect) is complete


def test_a_precision_request_is_padded_to_its_target_or_two_past_it_never_one_short() -> None:
    """No Padding TLV is one byte long (§6.3.1: type and length alone take two): a request one byte
    short of its target is padded two bytes past it instead."""
    from tsq import wire
    from tsq.session.client import ClientOptions, ClientSession

    bare = len(ClientSession(ClientOptions(name="srv", precision_size=1)).request_bytes(bytes(16))[0])
    for size in range(bare, bare + 6):
        data, expect = ClientSession(ClientOptions(name="srv", precision_size=size)).request_bytes(bytes(16))
        assert len(data) == (size + 2 if size == bare + 1 else size), size
        assert wire.decode_request(data).precision and expect.request_size == len(data)
