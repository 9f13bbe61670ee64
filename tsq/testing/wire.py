"""Test helpers for the TSQ wire codec: hypothesis strategies and test-vector loading.

Used by tests/wire/ and available to other parts' tests (e.g. fuzzing a server with valid
requests). Needs hypothesis (a test dependency), so never import this from production code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hypothesis import strategies as st

from tsq.wire import (
    MAX_SIGNATURE_BYTES,
    NONCE_SIZE,
    TLV_NAMES,
    ClockQuality,
    ErrorResponse,
    Request,
    Response,
    SignatureBlock,
    TimeSourceInfo,
    Tlv,
)


def vector_dir() -> Path:
    """tests/vectors of the source checkout: $TSQ_VECTOR_DIR, else beside this package when it runs
    from the checkout, else under the current directory (tox runs the installed package from it)."""
    env = os.environ.get("TSQ_VECTOR_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "tests" / "vectors"
    return beside if beside.is_dir() else Path.cwd() / "tests" / "vectors"


def load_vectors(name: str) -> Dict[str, Any]:
    """Load tests/vectors/<name> (JSON) from the source checkout."""
    with open(vector_dir() / name, encoding="utf-8") as fh:
        data: Dict[str, Any] = json.load(fh)
    return data


def _signature(raw: Optional[List[Any]]) -> Optional[SignatureBlock]:
    return None if raw is None else SignatureBlock(raw[0], raw[1], bytes.fromhex(raw[2]))


def _metadata(raw: List[List[str]]) -> Tuple[Tuple[str, str], ...]:
    return tuple((k, v) for k, v in raw)


def _unknown(raw: List[List[Any]]) -> Tuple[Tlv, ...]:
    return tuple(Tlv(t, bytes.fromhex(v)) for t, v in raw)


def request_from_json(e: Dict[str, Any]) -> Request:
    """A Request from a vector's `expect` object."""
    return Request(bytes.fromhex(e["nonce"]), e["precision"], e["signature_request"], e["metadata_query"],
                   _metadata(e["metadata"]), _unknown(e["unknown"]), e["padding"])


def response_from_json(e: Dict[str, Any]) -> Response:
    """A Response from a vector's `expect` object (signed_data is not part of equality)."""
    cq = e["clock_quality"]
    ts = e["time_source"]
    return Response(
        nonce=bytes.fromhex(e["nonce"]), receive_ts=e["receive_ts"], send_ts=e["send_ts"],
        precision=e["precision"], clock_quality=None if cq is None else ClockQuality(*cq),
        time_source=None if ts is None else TimeSourceInfo(*ts), metadata=_metadata(e["metadata"]),
        unknown=_unknown(e["unknown"]), padding=e["padding"], signature=_signature(e["signature"]))


def error_from_json(e: Dict[str, Any]) -> ErrorResponse:
    """An ErrorResponse from a vector's `expect` object."""
    return ErrorResponse(e["code"], e["reason"], _signature(e["signature"]))


# --- hypothesis strategies -------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ntp64 = st.integers(0, 2**64 - 1)
nonces = st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE)


def utf8_text(max_bytes: int) -> st.SearchStrategy[str]:
    """Any text (surrogates excluded, as they have no UTF-8 form) of at most `max_bytes` bytes."""
    return st.text(max_size=max_bytes).map(
        lambda s: s.encode("utf-8")[:max_bytes].decode("utf-8", "ignore"))


# Each pair is at most 2 + 120 + 120 bytes, so always fits one Metadata TLV.
_pairs = st.tuples(utf8_text(120), utf8_text(120))
metadata = st.lists(_pairs, max_size=6).map(
    lambda ps: tuple(sorted(ps, key=lambda kv: kv[0].encode("utf-8"))))
unknown_tlvs = st.lists(
    st.builds(Tlv, st.integers(4, 246), st.binary(max_size=255)), max_size=3).map(tuple)
assert not any(t in TLV_NAMES for t in range(4, 247))
paddings = st.one_of(st.just(0), st.integers(2, 600))
clock_qualities = st.builds(ClockQuality, u8, u16, u16, utf8_text(249))
time_sources = st.builds(TimeSourceInfo, u8, u8, utf8_text(253))
signature_blocks = st.builds(SignatureBlock, u8, u32, st.binary(max_size=MAX_SIGNATURE_BYTES))

requests = st.builds(Request, nonces, st.booleans(), st.booleans(), st.booleans(), metadata,
                     unknown_tlvs, paddings)
responses = st.builds(
    Response, nonces, ntp64, ntp64, st.booleans(), st.none() | clock_qualities,
    st.none() | time_sources, metadata, unknown_tlvs, paddings, st.none() | signature_blocks)
error_reasons = utf8_text(253)
