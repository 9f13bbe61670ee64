"""Draft §6.6 on the client: every rejected response becomes a Discarded event and a failed job,
never a sample; unsolicited datagrams are discarded; signatures are checked."""

from __future__ import annotations

from typing import Any, Callable, Dict

import pytest

from tsq import wire
from tsq.auth import Ed25519Signer, HmacSigner, Verifier
from tsq.session.client import ClientOptions, JobDone
from tsq.session.errors import TsqInvalidResponse, TsqServerError, TsqTimeout
from tsq.session.server import ServerPolicy

NS = 1_000_000_000
MS = 1_000_000
US = 1_000
DAY = 86_400 * NS
LINK = Callable[..., Any]
SECRET = b"0123456789abcdef-checks"
HMAC = HmacSigner(3, SECRET)


def warm_link(make_link: LINK, mode: str, **opts: Any) -> Any:
    options = ClientOptions(name="srv", interleaved=False, **opts)
    link = make_link(options, peer_datagrams=mode == "datagram", serve=False)
    signer = HMAC if opts.get("require_signature") else None
    link.answer(link.client.start_exchange(link.now()), signer=signer)
    return link


def rejected(link: Any, make: Callable[[Any], bytes], rx_raw: Any = None) -> JobDone:
    """Start a sample, answer it 2 ms later with `make(out)`, return its JobDone."""
    job = link.client.start_sample(link.now())
    link.pump()
    out = link.sent[-1]
    link.advance(2 * MS)
    data = make(out)
    if out.mode == "datagram":
        link.datagram(data, rx_raw=rx_raw)
    else:
        link.stream(out, [data], fin=True)
    done = link.done(job)
    assert done is not None and done.exchange is None
    return done


def t1_utc(link: Any, out: Any, kit: Any) -> int:
    return int(link.t1[out.key] + kit.UTC_MINUS_RAW)


REJECTIONS: Dict[str, Any] = {
    "missing T2": (lambda link, out, kit: wire.encode_request(wire.Request(kit.request_nonce(out))),
                   "malformed response: response must carry Receive Timestamp (type 2) as TLV #2"),
    "missing T3": (lambda link, out, kit: link.reply(out)[:28],
                   "malformed response: response must carry Send Timestamp (type 3) as TLV #3"),
    "duplicate Nonce TLV": (lambda link, out, kit: link.reply(out) + link.reply(out)[:18],
                            "malformed response: duplicate Nonce (type 1) at offset 38"),
    "T3 < T2": (lambda link, out, kit: link.reply(out, t2=link.utc - US, t3=link.utc - 2 * US),
                "T3 earlier than T2 (§6.6)"),
    "non-positive RTT": (lambda link, out, kit: link.reply(out, t2=t1_utc(link, out, kit),
                                                            t3=t1_utc(link, out, kit) + 2 * MS),
                         "non-positive round-trip time 0 ns (§6.6)"),
    "offset beyond the threshold": (lambda link, out, kit: link.reply(
                                        out, t2=t1_utc(link, out, kit) + 2 * DAY + MS - 5 * US,
                                        t3=t1_utc(link, out, kit) + 2 * DAY + MS + 5 * US),
                                    "offset +172800.000 s beyond threshold (§6.6)"),
    "Error TLV": (lambda link, out, kit: wire.encode_error(wire.ERR_AUTH_REQUIRED, "sign me"),
                  "server error 3: sign me"),
    "Error TLV without a reason": (lambda link, out, kit: wire.encode_error(wire.ERR_MALFORMED),
                                   "server error 1: (no reason)"),
}


# An Error TLV carries no nonce: over datagrams it is unsolicited (test_unsolicited_datagrams...).
@pytest.mark.parametrize(("case", "mode"), [(c, m) for c in sorted(REJECTIONS) for m in ("datagram", "stream")
                                            if m == "stream" or not c.startswith("Error")])
def test_rejections_are_discarded_and_fail_the_job(make_link: LINK, kit: Any, case: str, mode: str) -> None:
    make, reason = REJECTIONS[case]
    link = warm_link(make_link, mode)
    done = rejected(link, lambda out: make(link, out, kit))
    assert isinstance(done.error, TsqInvalidResponse)
    assert str(done.error) == f"srv: {reason}"
    assert link.discarded == [str(done.error)]
    assert link.client.discarded_responses == 1
    if case.startswith("Error"):
        assert isinstance(done.error, TsqServerError)


def test_t4_before_t1_is_rejected(make_link: LINK, kit: Any) -> None:
    link = warm_link(make_link, "datagram")
    done = rejected(link, lambda out: link.reply(out, t2=link.utc - MS, t3=link.utc - MS + US),
                    rx_raw=link.raw - 1)
    assert str(done.error) == "srv: T4 earlier than T1 (§6.6)"
    assert link.discarded == [str(done.error)]


def test_offset_threshold_is_the_clients_option(make_link: LINK) -> None:
    link = warm_link(make_link, "datagram", max_offset_ns=NS)
    done = rejected(link, lambda out: link.reply(out, t2=link.utc + 2 * NS, t3=link.utc + 2 * NS + US))
    assert "beyond threshold" in str(done.error)
    job = link.client.start_sample(link.now())
    link.pump()
    link.advance(2 * MS)
    link.datagram(link.reply(link.sent[-1], t2=link.utc + NS // 2, t3=link.utc + NS // 2 + US))
    assert link.done(job).exchange is not None           # half a second off: within 1 s


def test_wrong_nonce_over_a_stream_is_rejected(make_link: LINK) -> None:
    link = warm_link(make_link, "stream")
    done = rejected(link, lambda out: link.reply(out, nonce=bytes(16)))
    assert str(done.error) == "srv: response nonce does not match the request (§6.6)"
    assert link.discarded == [str(done.error)]


def test_wrong_nonce_over_datagrams_is_unsolicited(make_link: LINK) -> None:
    link = warm_link(make_link, "datagram")
    job = link.client.start_sample(link.now())
    link.pump()
    link.advance(MS)
    link.datagram(link.reply(link.sent[-1], nonce=bytes(16)))
    assert link.discarded == ["srv: datagram response with an unknown nonce discarded (§6.6)"]
    assert link.done(job) is None                        # the real answer may still come
    link.advance(MS)
    link.datagram(link.reply(link.sent[-1]))
    assert link.done(job).exchange is not None


def test_a_duplicated_datagram_answer_gives_one_sample(make_link: LINK) -> None:
    link = warm_link(make_link, "datagram")
    job = link.client.start_sample(link.now())
    link.pump()
    link.advance(MS)
    answer = link.reply(link.sent[-1])
    link.datagram(answer)
    link.datagram(answer)                                # duplicated on the way
    assert len([e for e in link.of(JobDone) if e.job == job]) == 1
    assert link.discarded == ["srv: datagram response with an unknown nonce discarded (§6.6)"]


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x10" + bytes(15), wire.encode_error(1, "x"),
                                  b"\x02\x10" + bytes(16), b"\x01\x0f" + bytes(20)])
def test_unsolicited_datagrams_are_discarded(make_link: LINK, data: bytes) -> None:
    link = warm_link(make_link, "datagram")
    job = link.client.start_sample(link.now())
    link.pump()
    link.datagram(data)
    assert link.discarded == ["srv: datagram response with an unknown nonce discarded (§6.6)"]
    assert link.done(job) is None and link.client.discarded_responses == 1


def test_a_late_datagram_after_a_timeout_is_discarded(make_link: LINK) -> None:
    link = warm_link(make_link, "datagram")
    job = link.client.start_exchange(link.now())
    link.pump()
    out = link.sent[-1]
    link.run(job)
    assert isinstance(link.done(job).error, TsqTimeout)
    link.datagram(link.reply(out))                       # the answer, too late: nobody waits for it
    assert link.discarded == ["srv: datagram response with an unknown nonce discarded (§6.6)"]


# ------------------------------------------------------------------------------------------ signatures
@pytest.mark.parametrize("mode", ["datagram", "stream"])
def test_unsigned_when_a_signature_is_required(make_link: LINK, mode: str) -> None:
    link = warm_link(make_link, mode, require_signature=True, verifier=Verifier({3: SECRET}))
    done = rejected(link, lambda out: link.reply(out))
    assert str(done.error) == "srv: signature requested but the response is unsigned"
    assert link.discarded == [str(done.error)]


@pytest.mark.parametrize("require", [True, False])
def test_bad_signature(make_link: LINK, require: bool) -> None:
    link = warm_link(make_link, "datagram", require_signature=require, verifier=Verifier({3: SECRET}))
    done = rejected(link, lambda out: link.reply(out, signer=HmacSigner(3, b"not the secret at all")))
    assert str(done.error) == "srv: signature verification failed (key id 3)"

    def tampered(out: Any) -> bytes:
        data = bytearray(link.reply(out, signer=HMAC))
        data[25] ^= 1                                    # one bit of T2, after signing
        return bytes(data)

    done = rejected(link, tampered)
    assert str(done.error) == "srv: signature verification failed (key id 3)"
    assert len(link.discarded) == 2


def test_signature_without_a_key(make_link: LINK) -> None:
    link = warm_link(make_link, "datagram", require_signature=True)
    done = rejected(link, lambda out: link.reply(out, signer=HMAC))
    assert str(done.error) == "srv: no key to verify the signature with"
    link = warm_link(make_link, "datagram")              # not required, no key: the signature is extra
    job = link.client.start_sample(link.now())
    link.pump()
    link.advance(MS)
    link.datagram(link.reply(link.sent[-1], signer=HMAC))
    assert link.done(job).exchange is not None


@pytest.mark.parametrize("mode", ["datagram", "stream"])
def test_signed_exchanges_with_a_real_server(make_link: LINK, mode: str) -> None:
    signer = Ed25519Signer(11, bytes(range(32)))
    opts = ClientOptions(name="srv", require_signature=True, verifier=Verifier({11: signer.public_key()}))
    link = make_link(opts, ServerPolicy(signer=signer))
    for _ in range(3):
        done = link.sample(mode)
        assert done.error is None and done.exchange.mode == mode
    assert done.interleaved                              # signed responses carry the report too
    assert all(wire.decode_response(p).signature is not None for _, p in link.replies)
    assert link.discarded == []


def test_signature_required_from_a_server_that_does_not_sign(make_link: LINK) -> None:
    opts = ClientOptions(name="srv", require_signature=True, verifier=Verifier({3: SECRET}))
    link = make_link(opts, peer_datagrams=False)
    done = link.sample()
    assert isinstance(done.error, TsqServerError) and done.error.code == wire.ERR_AUTH_REQUIRED
    assert str(done.error) == "srv: server error 3: this server does not sign"
    # Over datagrams the server stays silent (§6.6) while its ACKs come: after two unanswered
    # datagrams the client retries over a stream (§6.5), where the Error TLV can be sent.
    link = make_link(opts)
    done = link.sample()
    assert [o.mode for o in link.sent] == ["datagram", "datagram", "stream"]
    assert link.stats.dropped == 2 and len(link.fallbacks) == 1
    assert str(done.error) == "srv: server error 3: this server does not sign"
