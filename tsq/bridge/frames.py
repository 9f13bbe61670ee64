"""The serial bridge protocol (firmware-bridge/PROTOCOL.md, version 1), sans-IO.

COBS framing with a 0x00 delimiter; inside: version, type, seq, body, CRC-16/CCITT-FALSE. Every
decoder here is total: it returns a value or raises `FrameError`, and `StreamDecoder` never raises
at all (it drops and counts bad frames).

`decode` also refuses device frames that are well formed but nonsense (`check_fields`): a HELLO
whose tick rate no clock has or whose protocol is not 1, a PONG answered before it was received, a
STATUS state that does not exist. Such a device must not be shown as synchronised, and the
session's arithmetic must never see a tick rate of 0. `encode` stays permissive, so tests can
build such frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, Union

VERSION = 1
MAX_RAW = 64
HEADER = struct.Struct("<BBH")

HELLO_REQUEST = 0x01
HELLO = 0x02
PING = 0x03
PONG = 0x04
TIMESCALE = 0x05
STATUS = 0x06

_HELLO = struct.Struct("<IBBBBIH")
_PONG = struct.Struct("<QQ")
_TIMESCALE = struct.Struct("<QqQIBBI")
_STATUS = struct.Struct("<BHIHHH")
BODY_SIZES = {HELLO_REQUEST: 0, HELLO: _HELLO.size, PING: 16, PONG: _PONG.size,
              TIMESCALE: _TIMESCALE.size, STATUS: _STATUS.size}

CAP_NMEA = 1
CAP_PPS = 2
CAP_HW_TX_STAMP = 4
FLAG_SYNCHRONISED = 1

# A device tick rate outside this range is a broken or hostile HELLO, not a clock: 1 kHz is coarser
# than any timer worth synchronising (a 32.768 kHz RTC crystal is well inside), 2 GHz is above any
# MCU cycle counter (and a u32 cannot carry the "more than 10 GHz" of a garbled frame anyway).
MIN_TICK_HZ = 1_000
MAX_TICK_HZ = 2_000_000_000
STATUS_STATES = 4                 # 0 unsynchronised, 1 synchronised, 2 holdover, 3 booting


class FrameError(ValueError):
    """A frame that is not valid protocol version 1; the message says why."""


class ImplausibleFrame(FrameError):
    """A well-formed frame whose fields make no sense (see `check_fields`)."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); crc16(b"123456789") == 0x29B1."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data` (no delimiter appended)."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of cobs_encode; FrameError on a zero byte or a code running past the end."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError("COBS code runs past the end of the frame")
        block = data[i + 1:end]
        if 0 in block:
            raise FrameError("zero byte inside a COBS frame")
        out += block
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


# -- messages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HelloRequest:
    seq: int


@dataclass(frozen=True)
class Hello:
    seq: int
    device_id: int
    firmware: tuple[int, int, int]
    proto: int
    tick_hz: int
    capabilities: int


@dataclass(frozen=True)
class Ping:
    seq: int


@dataclass(frozen=True)
class Pong:
    seq: int
    t2_ticks: int
    t3_ticks: int


@dataclass(frozen=True)
class TimescaleMsg:
    seq: int
    t0_ticks: int
    utc0_ns: int
    ns_per_tick_q32: int
    bound_ns: int
    leap: int
    flags: int
    valid_ms: int


@dataclass(frozen=True)
class Status:
    seq: int
    state: int
    timescale_seq: int
    bound_ns: int
    bad_frames: int
    resets: int
    overruns: int


Message = Union[HelloRequest, Hello, Ping, Pong, TimescaleMsg, Status]


def _frame(mtype: int, seq: int, body: bytes) -> bytes:
    raw = HEADER.pack(VERSION, mtype, seq & 0xFFFF) + body
    raw += struct.pack("<H", crc16(raw))
    return cobs_encode(raw) + b"\x00"


def encode(msg: Message) -> bytes:
    """The wire bytes of `msg`, delimiter included; FrameError for out-of-range fields."""
    try:
        if isinstance(msg, HelloRequest):
            return _frame(HELLO_REQUEST, msg.seq, b"")
        if isinstance(msg, Hello):
            body = _HELLO.pack(msg.device_id, *msg.firmware, msg.proto, msg.tick_hz, msg.capabilities)
            return _frame(HELLO, msg.seq, body)
        if isinstance(msg, Ping):
            return _frame(PING, msg.seq, bytes(16))
        if isinstance(msg, Pong):
            return _frame(PONG, msg.seq, _PONG.pack(msg.t2_ticks, msg.t3_ticks))
        if isinstance(msg, TimescaleMsg):
            body = _TIMESCALE.pack(msg.t0_ticks, msg.utc0_ns, msg.ns_per_tick_q32,
                                   min(msg.bound_ns, 0xFFFFFFFF), msg.leap, msg.flags, msg.valid_ms)
            return _frame(TIMESCALE, msg.seq, body)
        body = _STATUS.pack(msg.state, msg.timescale_seq, min(msg.bound_ns, 0xFFFFFFFF),
                            msg.bad_frames, msg.resets, msg.overruns)
        return _frame(STATUS, msg.seq, body)
    except struct.error as exc:
        raise FrameError(f"field out of range: {exc}") from None


def check_fields(msg: Message) -> Message:
    """`msg` if its fields make sense (PROTOCOL.md); FrameError naming the field otherwise."""
    if isinstance(msg, Hello):
        if msg.proto != VERSION:
            raise ImplausibleFrame(f"HELLO announces protocol {msg.proto}, expected {VERSION}")
        if not MIN_TICK_HZ <= msg.tick_hz <= MAX_TICK_HZ:
            raise ImplausibleFrame(f"HELLO tick rate {msg.tick_hz} Hz outside {MIN_TICK_HZ}..{MAX_TICK_HZ}")
    elif isinstance(msg, Pong):
        if msg.t3_ticks < msg.t2_ticks:
            raise ImplausibleFrame(
                f"PONG sent (t3 {msg.t3_ticks}) before its PING arrived (t2 {msg.t2_ticks})")
    elif isinstance(msg, Status) and msg.state >= STATUS_STATES:
        raise ImplausibleFrame(f"STATUS state {msg.state} is not one of 0..{STATUS_STATES - 1}")
    return msg


def decode(frame: bytes) -> Message:
    """Decode one frame (COBS bytes without the delimiter); FrameError says what is wrong."""
    return check_fields(_decode(frame))


def _decode(frame: bytes) -> Message:
    if len(frame) > MAX_RAW + 2:
        raise FrameError(f"frame of {len(frame)} bytes is longer than the maximum")
    raw = cobs_decode(frame)
    if len(raw) < HEADER.size + 2:
        raise FrameError(f"frame of {len(raw)} bytes is too short")
    if len(raw) > MAX_RAW:
        raise FrameError(f"frame of {len(raw)} bytes is longer than {MAX_RAW}")
    (crc,) = struct.unpack_from("<H", raw, len(raw) - 2)
    if crc != crc16(raw[:-2]):
        raise FrameError("CRC mismatch")
    version, mtype, seq = HEADER.unpack_from(raw)
    if version != VERSION:
        raise FrameError(f"protocol version {version}, expected {VERSION}")
    body = raw[HEADER.size:-2]
    size = BODY_SIZES.get(mtype)
    if size is None:
        raise FrameError(f"unknown message type 0x{mtype:02x}")
    if len(body) != size:
        raise FrameError(f"type 0x{mtype:02x} body is {len(body)} bytes, expected {size}")
    if mtype == HELLO_REQUEST:
        return HelloRequest(seq)
    if mtype == HELLO:
        dev, ma, mi, pa, proto, hz, caps = _HELLO.unpack(body)
        return Hello(seq, dev, (ma, mi, pa), proto, hz, caps)
    if mtype == PING:
        return Ping(seq)
    if mtype == PONG:
        return Pong(seq, *_PONG.unpack(body))
    if mtype == TIMESCALE:
        return TimescaleMsg(seq, *_TIMESCALE.unpack(body))
    return Status(seq, *_STATUS.unpack(body))


class StreamDecoder:
    """Feed it bytes as they arrive; it yields whole messages and counts what it had to drop.

    `bad_frames` counts every dropped frame, `implausible` those among them that were well formed
    but nonsense; `last_error` says why the latest one was dropped (for the status)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad_frames = 0
        self.implausible = 0
        self.last_error = ""
        self.overflowing = False

    def feed(self, data: bytes) -> Iterator[Message]:
        for byte in data:
            if byte != 0:
                if len(self._buf) > MAX_RAW + 2:
                    # Garbage without delimiters: stop buffering, drop it when the 0x00 comes.
                    self.overflowing = True
                    continue
                self._buf.append(byte)
                continue
            frame, overflowed = bytes(self._buf), self.overflowing
            self._buf.clear()
            self.overflowing = False
            if not frame and not overflowed:
                continue  # back-to-back delimiters (a sender resynchronising) are not errors
            if overflowed:
                self.bad_frames += 1
                self.last_error = f"more than {MAX_RAW + 2} bytes without a delimiter"
                continue
            try:
                msg = decode(frame)
            except FrameError as exc:
                self.bad_frames += 1
                self.implausible += isinstance(exc, ImplausibleFrame)
                self.last_error = str(exc)
                continue
            yield msg


def q32_rate(ns_per_tick: float) -> int:
    """UTC ns per tick as unsigned Q32.32, as TIMESCALE carries it."""
    return round(ns_per_tick * (1 << 32))


def apply_timescale(ts: TimescaleMsg, ticks: int) -> int:
    """What the device computes: utc0 + ((t - t0) * rate_q32) >> 32 (floor), in integers."""
    return ts.utc0_ns + (((ticks - ts.t0_ticks) * ts.ns_per_tick_q32) >> 32)
