"""The serial protocol codec against the byte-exact vectors, known COBS/CRC values, and fuzzing."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.bridge import frames

VECTORS = Path(__file__).resolve().parents[2] / "firmware-bridge" / "vectors" / "frames.txt"


def _vectors(kind: str) -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for line in VECTORS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, k, hexdata, *fields = line.split()
        if k == kind:
            out.append((name, bytes.fromhex(hexdata), dict(f.split("=", 1) for f in fields)))
    return out


def _fields(msg: frames.Message) -> dict[str, str]:
    m = msg
    common = {"seq": str(m.seq)}
    if isinstance(m, frames.HelloRequest):
        return {"type": "1", **common}
    if isinstance(m, frames.Hello):
        return {"type": "2", **common, "device_id": str(m.device_id), "fw": ".".join(map(str, m.firmware)),
                "proto": str(m.proto), "tick_hz": str(m.tick_hz), "caps": str(m.capabilities)}
    if isinstance(m, frames.Ping):
        return {"type": "3", **common}
    if isinstance(m, frames.Pong):
        return {"type": "4", **common, "t2": str(m.t2_ticks), "t3": str(m.t3_ticks)}
    if isinstance(m, frames.TimescaleMsg):
        return {"type": "5", **common, "t0": str(m.t0_ticks), "utc0": str(m.utc0_ns),
                "rate_q32": str(m.ns_per_tick_q32), "bound": str(m.bound_ns), "leap": str(m.leap),
                "flags": str(m.flags), "valid_ms": str(m.valid_ms)}
    return {"type": "6", **common, "state": str(m.state), "timescale_seq": str(m.timescale_seq),
            "bound": str(m.bound_ns), "bad_frames": str(m.bad_frames), "resets": str(m.resets),
            "overruns": str(m.overruns)}


@pytest.mark.parametrize(("name", "wire", "fields"), _vectors("valid"), ids=lambda v: str(v)[:20])
def test_valid_vectors_decode_and_reencode_byte_exact(name: str, wire: bytes, fields: dict[str, str]) -> None:
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    msg = frames.decode(wire[:-1])
    assert _fields(msg) == fields
    assert frames.encode(msg) == wire


@pytest.mark.parametrize(("name", "wire", "fields"), _vectors("bad"), ids=lambda v: str(v)[:20])
def test_bad_vectors_are_refused_and_counted(name: str, wire: bytes, fields: dict[str, str]) -> None:
    with pytest.raises(frames.FrameError):
        frames.decode(wire.split(b"\x00")[0])
    dec = frames.StreamDecoder()
    assert list(dec.feed(wire)) == []
    assert dec.bad_frames >= 1


def test_crc_check_value_and_known_cobs() -> None:
    assert frames.crc16(b"123456789") == 0x29B1
    known = {b"\x00": b"\x01\x01", b"\x00\x00": b"\x01\x01\x01", b"\x11\x22\x00\x33": b"\x03\x11\x22\x02\x33",
             b"\x11\x22\x33\x44": b"\x05\x11\x22\x33\x44", b"\x11\x00\x00\x00": b"\x02\x11\x01\x01\x01",
             bytes(range(1, 255)): b"\xff" + bytes(range(1, 255)) + b"\x01"}
    for raw, enc in known.items():
        assert frames.cobs_encode(raw) == enc
        assert frames.cobs_decode(enc) == raw


def test_ping_and_pong_have_equal_wire_length() -> None:
    assert len(frames.encode(frames.Ping(1))) == len(frames.encode(frames.Pong(1, 2**64 - 1, 0)))


def test_timescale_arithmetic_matches_exact_fraction_at_ten_years() -> None:
    from fractions import Fraction

    rate = frames.q32_rate(999.95)  # a 1 MHz crystal 50 ppm fast
    ts = frames.TimescaleMsg(1, 0, 1_795_000_000 * 10**9, rate, 0, 0, 1, 0)
    ticks = 10 * 365 * 86_400 * 1_000_000
    exact = Fraction(rate, 2**32) * ticks
    assert frames.apply_timescale(ts, ticks) - ts.utc0_ns == int(exact)  # floor, as the device
    assert abs(Fraction(rate, 2**32) - Fraction(99995, 100)) < Fraction(1, 2**32)


@given(st.binary(max_size=300))
def test_cobs_round_trip(data: bytes) -> None:
    enc = frames.cobs_encode(data)
    assert 0 not in enc
    assert frames.cobs_decode(enc) == data


@given(st.binary(max_size=200))
def test_decode_is_total(data: bytes) -> None:
    with contextlib.suppress(frames.FrameError):  # anything else escaping fails the test
        frames.decode(data)


@given(st.lists(st.binary(max_size=80), max_size=8), st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1))
def test_stream_decoder_resyncs_after_garbage(garbage: list[bytes], seq: int, t2: int) -> None:
    good = frames.encode(frames.Pong(seq, t2, t2))
    dec = frames.StreamDecoder()
    got = []
    for chunk in garbage:
        got += list(dec.feed(chunk))
    got += list(dec.feed(b"\x00" + good))
    assert got[-1] == frames.Pong(seq, t2, t2)


@given(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 255), st.integers(frames.MIN_TICK_HZ, frames.MAX_TICK_HZ), st.integers(0, 0xFFFF))
def test_hello_round_trip(seq: int, dev: int, a: int, b: int, c: int, hz: int, caps: int) -> None:
    msg = frames.Hello(seq, dev, (a, b, c), 1, hz, caps)
    assert frames.decode(frames.encode(msg)[:-1]) == msg


def test_out_of_range_field_is_a_frame_error() -> None:
    with pytest.raises(frames.FrameError):
        frames.encode(frames.Pong(1, -1, 0))


@pytest.mark.parametrize(("msg", "why"), [
    (frames.Hello(1, 7, (1, 0, 0), 1, 0, 0), "tick rate 0"),
    (frames.Hello(1, 7, (1, 0, 0), 1, frames.MIN_TICK_HZ - 1, 0), "tick rate 999"),
    (frames.Hello(1, 7, (1, 0, 0), 1, frames.MAX_TICK_HZ + 1, 0), "tick rate 2000000001"),
    (frames.Hello(1, 7, (1, 0, 0), 1, 2**32 - 1, 0), "tick rate 4294967295"),
    (frames.Hello(1, 7, (1, 0, 0), 2, 1_000_000, 0), "protocol 2"),
    (frames.Hello(1, 7, (1, 0, 0), 0, 1_000_000, 0), "protocol 0"),
    (frames.Pong(1, 1000, 999), "before its PING arrived"),
    (frames.Status(1, 4, 0, 0, 0, 0, 0), "state 4"),
])
def test_nonsense_fields_are_dropped_and_counted(msg: frames.Message, why: str) -> None:
    wire = frames.encode(msg)
    with pytest.raises(frames.ImplausibleFrame, match=why):
        frames.decode(wire[:-1])
    dec = frames.StreamDecoder()
    good = frames.encode(frames.Pong(2, 5, 5))
    assert list(dec.feed(wire + good)) == [frames.Pong(2, 5, 5)]
    assert (dec.bad_frames, dec.implausible) == (1, 1)
    assert why in dec.last_error


def test_edges_of_the_plausible_hello_and_pong_pass() -> None:
    for hz in (frames.MIN_TICK_HZ, 32_768, 250_000, frames.MAX_TICK_HZ):
        msg = frames.Hello(3, 9, (0, 1, 0), 1, hz, 0xFFFF)
        assert frames.decode(frames.encode(msg)[:-1]) == msg
    assert frames.decode(frames.encode(frames.Pong(4, 77, 77))[:-1]) == frames.Pong(4, 77, 77)
    for state in range(frames.STATUS_STATES):
        msg = frames.Status(5, state, 1, 2, 3, 4, 5)
        assert frames.decode(frames.encode(msg)[:-1]) == msg


@given(st.lists(st.one_of(st.binary(max_size=90), st.sampled_from([b"\x00", b"\x00\x00"])), max_size=20))
def test_stream_decoder_never_raises_and_counts(chunks: list[bytes]) -> None:
    dec = frames.StreamDecoder()
    yielded = 0
    for chunk in chunks:
        yielded += len(list(dec.feed(chunk)))  # anything escaping fails the test
    frames_seen = b"".join(chunks).count(0)
    assert yielded + dec.bad_frames <= frames_seen
    assert dec.implausible <= dec.bad_frames


def test_cobs_blocks_with_a_zero_inside_are_refused() -> None:
    # code 3 says "two data bytes, then a zero", and one of those two bytes is itself a zero
    with pytest.raises(frames.FrameError, match="zero byte inside"):
        frames.cobs_decode(bytes([3, 1, 0]))
    with pytest.raises(frames.FrameError, match="zero byte inside"):
        frames.cobs_decode(bytes([2, 1, 0]))   # a zero where a code byte belongs


def test_a_frame_that_decodes_longer_than_the_maximum_is_refused() -> None:
    # MAX_RAW + 1 non-zero bytes COBS-encode to MAX_RAW + 2 bytes: within the encoded-length guard,
    # beyond the decoded one
    raw = bytes([1]) * (frames.MAX_RAW + 1)
    with pytest.raises(frames.FrameError, match=f"longer than {frames.MAX_RAW}"):
        frames.decode(frames.cobs_encode(raw))
