"""tsq.session.xleave (the interleaved-T3 report), tsq.session.alpn, tsq.session.errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.ntp import unix_ns_to_ntp64
from tsq.session.alpn import ALPN_LEGACY, ALPN_TSQ, offered
from tsq.session.errors import TsqError, TsqInvalidResponse, TsqServerError
from tsq.session.xleave import XLEAVE_RESPONSE_KEY, find_xleave, format_xleave, parse_xleave

NS = 1_000_000_000
NOW = 1_795_000_000 * NS
NONCE = bytes(range(16))


def test_format_names_nonce_and_ntp64() -> None:
    value = format_xleave(NONCE, NOW)
    assert value == f"{NONCE[:4].hex()}:{unix_ns_to_ntp64(NOW):016x}" and len(value) == 25
    parsed = parse_xleave(value, NONCE, NOW)
    assert parsed is not None and abs(parsed - NOW) <= 1
    # The whole nonce (what servers before the short form sent) and any prefix of 8+ digits: accepted.
    for digits in (32, 12, 8):
        assert parse_xleave(f"{NONCE.hex()[:digits].upper()}:{unix_ns_to_ntp64(NOW):x}", NONCE, NOW)


@given(tx=st.integers(NOW - 10**15, NOW + 10**15), nonce=st.binary(min_size=16, max_size=16))
def test_round_trip(tx: int, nonce: bytes) -> None:
    parsed = parse_xleave(format_xleave(nonce, tx), nonce, NOW)
    assert parsed is not None and abs(parsed - tx) <= 1


@pytest.mark.parametrize("value", [
    "",
    "nonsense",
    NONCE.hex(),                                   # no separator
    f"{NONCE.hex()}:",                             # no timestamp
    f"{NONCE.hex()}:{'0' * 17}",                   # longer than 64 bits
    f"{NONCE.hex()}:12g4",                         # not hex
    f"{NONCE.hex()}: 1234",
    f"{NONCE.hex()}:-1234",
    f"{bytes(16).hex()}:1234",                     # another exchange's report
    f"{bytes(4).hex()}:1234",                      # ... by its prefix
    f"{NONCE.hex()[:7]}:1234",                     # too short a prefix to name an exchange
    f"{NONCE.hex()}00:1234",                       # longer than a nonce
    f"+{NONCE.hex()[:8]}:1234",
])
def test_malformed_or_foreign_reports_are_none(value: str) -> None:
    assert parse_xleave(value, NONCE, NOW) is None


def test_short_and_uppercase_timestamps_are_accepted() -> None:
    assert parse_xleave(f"{NONCE.hex()}:1", NONCE, NOW) is not None
    assert parse_xleave(f"{NONCE.hex().upper()}:1234", NONCE, NOW) is not None   # hex is hex
    assert parse_xleave(f"{NONCE.hex()}:{unix_ns_to_ntp64(NOW):016X}", NONCE, NOW) is not None


def test_find_xleave() -> None:
    assert find_xleave(()) is None
    assert find_xleave((("site", "lab"),)) is None
    assert find_xleave((("site", "lab"), (XLEAVE_RESPONSE_KEY, "a:1"), (XLEAVE_RESPONSE_KEY, "b:2"))) == "a:1"


def test_alpn() -> None:
    assert offered(False) == [ALPN_TSQ] == ["tsq"]
    assert offered(True) == [ALPN_TSQ, ALPN_LEGACY] == ["tsq", "tsq/1"]


def test_server_error_message() -> None:
    err = TsqServerError(3, "sign me", "gw1")
    assert str(err) == "gw1: server error 3: sign me" and (err.code, err.reason) == (3, "sign me")
    assert str(TsqServerError(1, "")) == "server error 1: (no reason)"
    assert isinstance(err, TsqInvalidResponse) and isinstance(err, TsqError)
