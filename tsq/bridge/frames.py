"""The serial bridge protocol (firmware-bridge/PROTOCOL.md, version 1), sans-IO.

COBS framing with a 0x00 delimiter; inside: version, type, seq, body, CRC-16/CCITT-FALSE. Every
decoder here is total: it returns a value or raises `FrameError`, and `StreamDecoder` never raises
at all (it drops and counts bad frames).
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


class FrameError(ValueError):
    """A frame that is not valid protocol version 1; the message says why."""


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


def decode(frame: bytes) -> Message:
    """Decode one frame (COBS bytes without the delimiter); FrameError says what is wrong."""
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
    """Feed it bytes as they arrive; it yields whole messages and counts what it had to drop."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad_frames = 0
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
                continue
            try:
                yield decode(frame)
            except FrameError:
                self.bad_frames += 1


def q32_rate(ns_per_tick: float) -> int:
    """UTC ns per tick as unsigned Q32.32, as TIMESCALE carries it."""
    return round(ns_per_tick * (1 << 32))


def apply_timescale(ts: TimescaleMsg, ticks: int) -> int:
    """What the device computes: utc0 + ((t - t0) * rate_q32) >> 32 (floor), in integers."""
    return ts.utc0_ns + (((ticks - ts.t0_ticks) * ts.ns_per_tick_q32) >> 32)
