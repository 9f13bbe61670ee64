"""NMEA 0183 time sentences ($GPZDA, $GPRMC) for devices that expect a GPS receiver (sans-IO).

The bridge's `--nmea` mode writes one ZDA and one RMC sentence per UTC second, the first byte leaving
at the top of the second, like a GPS receiver's serial output. This module builds the sentences and
works out when each second starts on the raw clock; the writer in `tsq.bridge.service` does the I/O.
"""

from __future__ import annotations

import datetime as _dt
from typing import Optional, Tuple

NS_PER_S = 1_000_000_000
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class NmeaError(ValueError):
    """A sentence that is not well-formed NMEA 0183 (the only error `parse_sentence` raises)."""


def checksum(body: str) -> str:
    """The two hex digits of the XOR of every character between '$' and '*'."""
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return f"{value:02X}"


def sentence(body: str) -> bytes:
    """`$body*CS\\r\\n` as ASCII bytes. `body` must not contain '$', '*' or line ends."""
    if any(c in body for c in "$*\r\n") or not body.isascii():
        raise NmeaError(f"invalid characters in NMEA body {body!r}")
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


def parse_sentence(line: bytes) -> list[str]:
    """Check a sentence's framing and checksum; return its comma-separated fields (talker+type first).

    Total: returns a list or raises NmeaError.
    """
    try:
        text = line.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise NmeaError("non-ASCII bytes in sentence") from exc
    if not text.startswith("$") or len(text) < 4 or text[-3] != "*":
        raise NmeaError(f"not an NMEA sentence: {text[:20]!r}")
    body, given = text[1:-3], text[-2:]
    if "$" in body or "*" in body:
        raise NmeaError("stray '$' or '*' inside the sentence")
    if checksum(body) != given.upper():
        raise NmeaError(f"checksum mismatch: {given} != {checksum(body)}")
    return body.split(",")


def _utc(unix_s: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(seconds=unix_s)


def _hhmmss(t: _dt.datetime) -> str:
    return f"{t.hour:02d}{t.minute:02d}{t.second:02d}.00"


def gpzda(unix_s: int) -> bytes:
    """$GPZDA for the UTC second starting at `unix_s`: time, day, month, year, zone 00:00."""
    t = _utc(unix_s)
    return sentence(f"GPZDA,{_hhmmss(t)},{t.day:02d},{t.month:02d},{t.year:04d},00,00")


def _coord(value: float, degree_digits: int, hemispheres: str) -> tuple[str, str]:
    hemi = hemispheres[0] if value >= 0 else hemispheres[1]
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60.0
    return f"{degrees:0{degree_digits}d}{minutes:07.4f}", hemi


def gprmc(unix_s: int, valid: bool = True, position: Optional[Tuple[float, float]] = None) -> bytes:
    """$GPRMC for the UTC second starting at `unix_s`.

    `valid` is the status field (A/V): the bridge sets it from the time model's state, so a device
    never takes unsynchronised time for good. `position` (lat, lon in degrees) is optional: a time
    source has no position of its own; without it the position fields are left empty.
    """
    t = _utc(unix_s)
    if position is None:
        lat = lat_h = lon = lon_h = ""
    else:
        lat, lat_h = _coord(position[0], 2, "NS")
        lon, lon_h = _coord(position[1], 3, "EW")
    status = "A" if valid else "V"
    mode = "A" if valid else "N"
    date = f"{t.day:02d}{t.month:02d}{t.year % 100:02d}"
    return sentence(f"GPRMC,{_hhmmss(t)},{status},{lat},{lat_h},{lon},{lon_h},0.0,0.0,{date},,,{mode}")


def second_burst(unix_s: int, valid: bool = True, position: Optional[Tuple[float, float]] = None) -> bytes:
    """The bytes sent at the top of UTC second `unix_s`: ZDA (the time sentence) then RMC."""
    return gpzda(unix_s) + gprmc(unix_s, valid, position)


def next_second(utc_now_ns: int) -> int:
    """The next whole UTC second (unix seconds) strictly after `utc_now_ns`."""
    return utc_now_ns // NS_PER_S + 1


def raw_at_utc(target_utc_ns: int, raw_now: int, utc_now: int, rate: float = 1.0) -> int:
    """The raw ns at which the model's UTC reaches `target_utc_ns`, given one point and d(utc)/d(raw)."""
    return raw_now + round((target_utc_ns - utc_now) / rate)
