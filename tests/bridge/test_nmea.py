"""NMEA sentence builder: checksums, fields, parsing (sans-IO)."""

from __future__ import annotations

import calendar
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.bridge import nmea


def test_checksum_matches_known_sentence() -> None:
    # A widely quoted receiver sentence with its published checksum.
    body = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
    assert nmea.checksum(body) == "6A"


def test_zda_fields() -> None:
    unix_s = calendar.timegm((2026, 11, 24, 19, 5, 7))
    fields = nmea.parse_sentence(nmea.gpzda(unix_s))
    assert fields == ["GPZDA", "190507.00", "24", "11", "2026", "00", "00"]


def test_rmc_fields_and_validity() -> None:
    unix_s = calendar.timegm((2036, 2, 7, 6, 28, 16))  # past the NTP era rollover
    f = nmea.parse_sentence(nmea.gprmc(unix_s))
    assert f[0] == "GPRMC" and f[1] == "062816.00" and f[2] == "A" and f[9] == "070236"
    f = nmea.parse_sentence(nmea.gprmc(unix_s, valid=False, position=(-33.5, 151.25)))
    assert f[2] == "V" and f[3] == "3330.0000" and f[4] == "S" and f[5] == "15115.0000" and f[6] == "E"


def test_burst_is_zda_then_rmc() -> None:
    data = nmea.second_burst(1_800_000_000)
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"$GPZDA") and lines[1].startswith(b"$GPRMC") and lines[2] == b""


def test_sentence_rejects_bad_body() -> None:
    with pytest.raises(nmea.NmeaError):
        nmea.sentence("GP*ZDA")


def test_next_second_and_raw_target() -> None:
    assert nmea.next_second(5_000_000_000) == 6
    assert nmea.next_second(5_999_999_999) == 6
    # UTC runs 50 ppm fast against raw: reaching UTC+1 s takes slightly less raw time.
    raw = nmea.raw_at_utc(6_000_000_000, raw_now=100, utc_now=5_000_000_000, rate=1.00005)
    assert raw == 100 + round(1e9 / 1.00005)


@given(st.binary(max_size=100))
def test_parse_is_total(data: bytes) -> None:
    with contextlib.suppress(nmea.NmeaError):
        nmea.parse_sentence(data)


@given(st.integers(min_value=0, max_value=2**33))
def test_round_trip_checksums(unix_s: int) -> None:
    for s in (nmea.gpzda(unix_s), nmea.gprmc(unix_s)):
        assert nmea.parse_sentence(s)[0] in ("GPZDA", "GPRMC")
