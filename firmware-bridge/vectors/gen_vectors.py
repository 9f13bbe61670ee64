"""Write vectors/frames.txt: byte-exact frames of PROTOCOL.md v1, built WITHOUT tsq.bridge.frames
(struct, binascii.crc_hqx and a COBS encoder of its own), so the codec is checked against them.

Format, one vector per line, easy to parse in C: `name kind hex field=value ...` where kind is
`valid` (fields given), `bad` (must be dropped; `err=` the tsqb_err the firmware's decoder gives),
or, for TIMESCALE frames that decode but that a device must check against its own tick rate,
`implausible` (refused: `err=` the tsqb_timescale_check code) and `plausible` (accepted, the edges
of each limit), both with the device's `tick_hz=` and the frame's arrival tick `rx_tick=`. The
limits are PROTOCOL.md's "TIMESCALE plausibility". Lines starting with # are comments.
Run: python3 firmware-bridge/vectors/gen_vectors.py
"""

from __future__ import annotations

import binascii
import struct
from pathlib import Path


def cobs(data: bytes) -> bytes:
    out, block = bytearray(), bytearray()
    for b in data + b"\x00":
        if b == 0 or len(block) == 254:
            out.append(len(block) + 1)
            out += block
            block = bytearray()
            if b != 0:
                block.append(b)
        else:
            block.append(b)
    return bytes(out)


def frame(mtype: int, seq: int, body: bytes, version: int = 1, crc_xor: int = 0) -> bytes:
    raw = struct.pack("<BBH", version, mtype, seq) + body
    raw += struct.pack("<H", binascii.crc_hqx(raw, 0xFFFF) ^ crc_xor)
    return cobs(raw) + b"\x00"


VALID = [
    ("hello_request", frame(1, 1, b""), "type=1 seq=1"),
    ("hello", frame(2, 7, struct.pack("<IBBBBIH", 0x00C0FFEE, 1, 2, 3, 1, 1_000_000, 1)),
     "type=2 seq=7 device_id=12648430 fw=1.2.3 proto=1 tick_hz=1000000 caps=1"),
    ("ping", frame(3, 0x1234, bytes(16)), "type=3 seq=4660"),
    ("pong", frame(4, 0x1234, struct.pack("<QQ", 1_000_000_123, 1_000_000_456)),
     "type=4 seq=4660 t2=1000000123 t3=1000000456"),
    ("timescale_50ppm", frame(5, 9, struct.pack("<QqQIBBI", 5_000_000, 1_795_000_000_000_000_000,
                                                 round(999.95 * 2**32), 12_345, 0, 1, 10_000)),
     f"type=5 seq=9 t0=5000000 utc0=1795000000000000000 rate_q32={round(999.95 * 2**32)} bound=12345 "
     "leap=0 flags=1 valid_ms=10000"),
    ("timescale_leap_insert",
     frame(5, 10, struct.pack("<QqQIBBI", 2**40, -1, 1000 << 32, 2**32 - 1, 1, 0, 0)),
     f"type=5 seq=10 t0={2**40} utc0=-1 rate_q32={1000 << 32} bound=4294967295 leap=1 flags=0 valid_ms=0"),
    ("status", frame(6, 3, struct.pack("<BHIHHH", 1, 9, 15_000, 2, 1, 0)),
     "type=6 seq=3 state=1 timescale_seq=9 bound=15000 bad_frames=2 resets=1 overruns=0"),
]
good = VALID[3][1]
BAD = [
    ("bad_crc", frame(4, 1, bytes(16), crc_xor=1), "E_CRC"),
    ("bad_version", frame(4, 1, bytes(16), version=2), "E_VERSION"),
    ("unknown_type", frame(0x7F, 1, b""), "E_TYPE"),
    ("wrong_body_length", frame(3, 1, bytes(15)), "E_BODY"),
    ("truncated", good[:-6] + b"\x00", "E_CRC"),
    ("cobs_code_past_end", bytes([0x09, 1, 2, 3]) + b"\x00", "E_COBS"),
    ("cobs_zero_code", bytes([0x03, 1, 0x00]) + b"\x00", "E_COBS"),
    ("truncated_cobs", frame(1, 1, b"")[:3] + b"\x00", "E_COBS"),
    ("too_short", cobs(bytes([1, 1, 1, 0, 0])) + b"\x00", "E_LENGTH"),
    ("oversize", frame(3, 1, bytes(70)), "E_LENGTH"),
    ("type_zero", frame(0, 1, b""), "E_TYPE"),
]

# TIMESCALE plausibility (PROTOCOL.md): a 1 MHz device that received the frame at tick 5e6.
HZ, RX = 1_000_000, 5_000_000
NOMINAL = (10**9 << 32) // HZ            # 1000 ns per tick in Q32.32
TOL = NOMINAL // 1000                    # 1000 ppm
UTC_MIN, UTC_MAX = 946_684_800 * 10**9, 7_258_118_400 * 10**9   # 2000-01-01, 2200-01-01 (exclusive)
OK_TS = dict(t0=RX, utc0=1_795_000_000 * 10**9, rate=NOMINAL, bound=20_000, leap=0, flags=1, valid_ms=10_000)


def timescale(seq: int, **change: int) -> bytes:
    f = {**OK_TS, **change}
    return frame(5, seq, struct.pack("<QqQIBBI", f["t0"], f["utc0"], f["rate"], f["bound"], f["leap"],
                                     f["flags"], f["valid_ms"]))


CHECKED = [  # (name, kind, frame, tick_hz, rx_tick, err)
    ("ts_nominal", "plausible", timescale(20), HZ, RX, "OK"),
    ("ts_rate_plus_1000ppm", "plausible", timescale(21, rate=NOMINAL + TOL), HZ, RX, "OK"),
    ("ts_rate_minus_1000ppm", "plausible", timescale(22, rate=NOMINAL - TOL), HZ, RX, "OK"),
    ("ts_rate_too_fast", "implausible", timescale(23, rate=NOMINAL + TOL + 1), HZ, RX, "E_RATE"),
    ("ts_rate_too_slow", "implausible", timescale(24, rate=NOMINAL - TOL - 1), HZ, RX, "E_RATE"),
    ("ts_rate_zero", "implausible", timescale(25, rate=0), HZ, RX, "E_RATE"),
    ("ts_rate_max", "implausible", timescale(26, rate=2**64 - 1), HZ, RX, "E_RATE"),
    ("ts_rate_for_other_tick_hz", "implausible", timescale(27), 250_000, RX, "E_RATE"),
    ("ts_bound_zero", "implausible", timescale(28, bound=0), HZ, RX, "E_BOUND"),
    ("ts_bound_1s_synchronised", "plausible", timescale(29, bound=10**9), HZ, RX, "OK"),
    ("ts_bound_over_1s_synchronised", "implausible", timescale(30, bound=10**9 + 1), HZ, RX, "E_BOUND"),
    ("ts_bound_saturated_unsynchronised", "plausible", timescale(31, bound=2**32 - 1, flags=0), HZ, RX, "OK"),
    ("ts_utc_2000", "plausible", timescale(32, utc0=UTC_MIN), HZ, RX, "OK"),
    ("ts_utc_before_2000", "implausible", timescale(33, utc0=UTC_MIN - 1), HZ, RX, "E_UTC"),
    ("ts_utc_minus_one", "implausible", timescale(34, utc0=-1), HZ, RX, "E_UTC"),
    ("ts_utc_int64_min", "implausible", timescale(35, utc0=-2**63), HZ, RX, "E_UTC"),
    ("ts_utc_last_before_2200", "plausible", timescale(36, utc0=UTC_MAX - 1), HZ, RX, "OK"),
    ("ts_utc_2200", "implausible", timescale(37, utc0=UTC_MAX), HZ, RX, "E_UTC"),
    ("ts_utc_int64_max", "implausible", timescale(38, utc0=2**63 - 1), HZ, RX, "E_UTC"),
    ("ts_leap_unknown", "plausible", timescale(39, leap=3), HZ, RX, "OK"),
    ("ts_leap_4", "implausible", timescale(40, leap=4), HZ, RX, "E_LEAP"),
    ("ts_leap_255", "implausible", timescale(41, leap=255), HZ, RX, "E_LEAP"),
    ("ts_t0_60s_ahead", "plausible", timescale(42, t0=RX + 60 * HZ), HZ, RX, "OK"),
    ("ts_t0_60s_behind", "plausible", timescale(43, t0=RX + 60 * HZ), HZ, RX + 120 * HZ, "OK"),
    ("ts_t0_too_far_ahead", "implausible", timescale(44, t0=RX + 60 * HZ + 1), HZ, RX, "E_T0"),
    ("ts_t0_too_far_behind", "implausible", timescale(45, t0=0), HZ, 60 * HZ + 1, "E_T0"),
    ("ts_t0_max", "implausible", timescale(46, t0=2**64 - 1), HZ, RX, "E_T0"),
    ("ts_t0_of_a_device_before_reset", "implausible", timescale(47, t0=3_600 * HZ), HZ, 1_000, "E_T0"),
    ("ts_valid_one_day", "plausible", timescale(48, valid_ms=86_400_000), HZ, RX, "OK"),
    ("ts_valid_over_one_day", "implausible", timescale(49, valid_ms=86_400_001), HZ, RX, "E_VALID"),
    ("ts_valid_max", "implausible", timescale(50, valid_ms=2**32 - 1), HZ, RX, "E_VALID"),
]


def main() -> None:
    lines = ["# TSQ serial bridge protocol v1 vectors (generated by gen_vectors.py; do not edit)",
             "# name kind hex fields...  CRC-16/CCITT-FALSE check value of '123456789' = 0x29b1"]
    lines += [f"{name} valid {data.hex()} {fields}" for name, data, fields in VALID]
    lines += [f"{name} bad {data.hex()} err={err}" for name, data, err in BAD]
    lines += [f"{name} {kind} {data.hex()} tick_hz={hz} rx_tick={rx} err={err}"
              for name, kind, data, hz, rx, err in CHECKED]
    Path(__file__).with_name("frames.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
