"""Regenerate tests/vectors/wire_*.json: TSQ wire test vectors built by hand from the draft.

Deliberately independent of tsq.wire and tsq.auth: every message is assembled byte by byte here
with struct, and signatures come straight from `cryptography`/`hmac`, so the vectors check the
codec rather than echo it. Run: python3 tests/vectors/make_wire_vectors.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = Path(__file__).resolve().parent

# RFC 8032 §7.1 TEST 1 key pair; deterministic Ed25519 makes the signed vectors byte-exact.
ED25519_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ED25519_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
ED25519_KEY_ID = 0x01020304
HMAC_SECRET = b"tsq-test-vector-hmac-secret-0001"
HMAC_KEY_ID = 42

NONCE = bytes(range(16))
T2 = 0xEC6E3A4A_80000000  # 2025-09-01T00:00:10.5Z
T3 = 0xEC6E3A4A_80068DB8  # 100 µs later


def tlv(tlv_type: int, value: bytes = b"") -> bytes:
    assert len(value) <= 255
    return bytes((tlv_type, len(value))) + value


def ts(value: int) -> bytes:
    return value.to_bytes(8, "big")


def pair(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    return bytes((len(k),)) + k + bytes((len(v),)) + v


def pad(total: int) -> bytes:
    assert 2 <= total <= 257
    return tlv(254, bytes(total - 2))


def sig_ed25519(data: bytes) -> bytes:
    signature = Ed25519PrivateKey.from_private_bytes(ED25519_SEED).sign(data)
    return tlv(255, struct.pack(">BIH", 1, ED25519_KEY_ID, 64) + signature)


def sig_hmac(data: bytes) -> bytes:
    mac = hmac.new(HMAC_SECRET, data, hashlib.sha256).digest()
    return tlv(255, struct.pack(">BIH", 2, HMAC_KEY_ID, 32) + mac)


def core(t2: int = T2, t3: int = T3) -> bytes:
    return tlv(1, NONCE) + tlv(2, ts(t2)) + tlv(3, ts(t3))


def request_fields(**kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"nonce": NONCE.hex(), "precision": False, "signature_request": False,
                              "metadata_query": False, "metadata": [], "unknown": [], "padding": 0}
    fields.update(kw)
    return fields


def response_fields(**kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"nonce": NONCE.hex(), "receive_ts": T2, "send_ts": T3, "precision": False,
                              "clock_quality": None, "time_source": None, "metadata": [], "unknown": [],
                              "padding": 0, "signature": None}
    fields.update(kw)
    return fields


def valid_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, kind: str, data: bytes, expect: dict[str, Any], canonical: bool = True,
            **extra: Any) -> None:
        out.append({"name": name, "kind": kind, "hex": data.hex(), "expect": expect,
                    "canonical": canonical, **extra})

    md_value = bytes.fromhex("04 73 69 74 65 07 75 73 2d 65 61 73 74")
    assert md_value == pair("site", "us-east")
    add("draft metadata example (site=us-east) in a request", "request",
        tlv(1, NONCE) + tlv(253, md_value), request_fields(metadata=[["site", "us-east"]]),
        metadata_value=md_value.hex())

    add("minimal request", "request", tlv(1, NONCE), request_fields())

    flags = tlv(1, NONCE) + tlv(250) + tlv(252) + tlv(247)
    add("request with every flag and metadata", "request",
        flags + tlv(253, pair("client", "gw-7") + pair("fw", "1.2")),
        request_fields(precision=True, signature_request=True, metadata_query=True,
                       metadata=[["client", "gw-7"], ["fw", "1.2"]]))

    add("request with an unknown TLV (type 100) kept", "request",
        tlv(1, NONCE) + tlv(100, b"\xde\xad") + tlv(250),
        request_fields(precision=True, unknown=[[100, "dead"]]), canonical=False)

    add("request with an unknown TLV of reserved type 0 ignored (§6.3.1)", "request",
        tlv(1, NONCE) + b"\x00\x00", request_fields(), canonical=False)
    add("response with an unknown TLV of reserved type 0 ignored (§6.3.1)", "response",
        core() + b"\x00\x00", response_fields(), canonical=False)
    add("precision request whose TLV carries a value, treated as zero-length (§6.4)", "request",
        tlv(1, NONCE) + tlv(250, b"\x01\x02"), request_fields(precision=True), canonical=False)
    add("precision ack carrying a value, treated as zero-length (§6.4)", "response",
        core() + tlv(250, b"\x01"), response_fields(precision=True), canonical=False)

    add("wild-style response (TLVs 1-3 only)", "response", core(), response_fields())

    full = (core() + tlv(250) + tlv(248, bytes((1, 0)) + struct.pack(">HH", 5, 20) + b"gpsdo")
            + tlv(251, bytes((1, 1)) + b"gps.example")
            + tlv(253, pair("host", "ts1") + pair("site", "us-east"))
            + tlv(100, b"x") + pad(6))
    add("response with every optional TLV (unsigned)", "response", full,
        response_fields(precision=True, clock_quality=[1, 5, 20, "gpsdo"], time_source=[1, 1, "gps.example"],
                        metadata=[["host", "ts1"], ["site", "us-east"]], unknown=[[100, "78"]], padding=6))

    body = core() + tlv(248, bytes((4, 0)) + struct.pack(">HH", 65535, 65535)) + tlv(251, bytes((2, 3)))
    full_signed = body + tlv(250) + tlv(253, pair("k", "v")) + pad(2)
    add("signed response, optional TLVs in non-canonical order, Ed25519", "response",
        full_signed + sig_ed25519(full_signed),
        response_fields(precision=True, clock_quality=[4, 65535, 65535, ""], time_source=[2, 3, ""],
                        metadata=[["k", "v"]], padding=2,
                        signature=[1, ED25519_KEY_ID, sig_ed25519(full_signed)[9:].hex()]),
        canonical=False, signed_length=len(full_signed), key="ed25519")

    # Precision Mode pair: request padded to 256, response padded to the same 256 bytes.
    preq_body = tlv(1, NONCE) + tlv(250)
    preq = preq_body + pad(256 - len(preq_body))
    presp_body = core() + tlv(250)
    presp = presp_body + pad(256 - len(presp_body))
    assert len(preq) == len(presp) == 256
    add("precision-mode request padded to 256", "request", preq,
        request_fields(precision=True, padding=256 - len(preq_body)), pair_with="precision-mode response")
    add("precision-mode response padded to the request's 256", "response", presp,
        response_fields(precision=True, padding=256 - len(presp_body)), pair_name="precision-mode response")

    psigned_body = core() + tlv(250)
    psigned_pad = 256 - len(psigned_body) - 73
    psigned = psigned_body + pad(psigned_pad)
    add("precision-mode Ed25519-signed response padded to 256", "response", psigned + sig_ed25519(psigned),
        response_fields(precision=True, padding=psigned_pad,
                        signature=[1, ED25519_KEY_ID, sig_ed25519(psigned)[9:].hex()]),
        signed_length=len(psigned), key="ed25519", pair_name="precision-mode signed response")

    add("Ed25519-signed response", "response", core() + sig_ed25519(core()),
        response_fields(signature=[1, ED25519_KEY_ID, sig_ed25519(core())[9:].hex()]),
        signed_length=18 + 10 + 10, key="ed25519")
    add("HMAC-SHA256-signed response", "response", core() + sig_hmac(core()),
        response_fields(signature=[2, HMAC_KEY_ID, sig_hmac(core())[9:].hex()]),
        signed_length=38, key="hmac")

    err = tlv(249, bytes((1, 0)) + b"malformed request")
    add("Error response", "error", err, {"code": 1, "reason": "malformed request", "signature": None})
    err2 = tlv(249, bytes((3, 0)) + "authentication required – ключ".encode())
    add("HMAC-signed Error response, UTF-8 reason", "error", err2 + sig_hmac(err2),
        {"code": 3, "reason": "authentication required – ключ",
         "signature": [2, HMAC_KEY_ID, sig_hmac(err2)[9:].hex()]},
        signed_length=len(err2), key="hmac")
    add("Error response, empty reason, unusual code", "error", tlv(249, bytes((200, 0))),
        {"code": 200, "reason": "", "signature": None})
    # §6.3.2: after an Error TLV nothing is parsed (but one Signature Block covering it).
    add("Error response followed by timestamps, which are not parsed", "error",
        tlv(249, b"\x01\x00") + core(), {"code": 1, "reason": "", "signature": None}, canonical=False)
    add("Error response followed by padding, not parsed", "error", tlv(249, b"\x01\x00") + pad(2),
        {"code": 1, "reason": "", "signature": None}, canonical=False)
    add("Error response followed by junk, not parsed", "error", tlv(249, b"\x01\x00") + b"\xff",
        {"code": 1, "reason": "", "signature": None}, canonical=False)

    # Era boundary: T2 half a second before NTP era 0 ends (2036-02-07T06:28:16Z), T3 in era 1.
    t2_era0 = 0xFFFFFFFF_80000000
    t3_era1 = 0x00000000_40000000
    add("era boundary: T2 at the end of era 0, T3 in era 1", "response", core(t2_era0, t3_era1),
        response_fields(receive_ts=t2_era0, send_ts=t3_era1),
        unix_ns={"pivot": 2085978496 * 10**9, "receive": 2085978495_500000000,
                 "send": 2085978496_250000000})
    add("extreme ntp64 values carried verbatim", "response", core(0, 2**64 - 1),
        response_fields(receive_ts=0, send_ts=2**64 - 1))
    return out


def malformed_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def bad(kind: str, data: bytes, match: str, reason: str) -> None:
        out.append({"kind": kind, "hex": data.hex(), "match": match, "reason": reason})

    n = tlv(1, NONCE)
    for kind in ("request", "response"):
        bad(kind, b"", "empty", "empty message")
        bad(kind, n + b"\x02", "truncated TLV header", "one byte left after the nonce")
        bad(kind, b"\x01\x10" + NONCE[:15], "only 15 remain", "nonce value overruns the buffer")
        bad(kind, b"\x01", "truncated", "a lone type byte")
        bad(kind, tlv(1, NONCE[:15]), "must be 16 bytes", "15-byte nonce")
        bad(kind, tlv(1, NONCE + b"\x00"), "must be 16 bytes", "17-byte nonce")
        bad(kind, tlv(0, b"") + n, "begin with a Nonce", "type 0 before the nonce")
        bad(kind, tlv(100, b"") + n, "begin with a Nonce", "unknown TLV before the nonce")
    bad("request", tlv(250) + n, "begin with a Nonce", "nonce not first")
    bad("request", n + n, "duplicate Nonce", "two nonces")
    bad("request", n + tlv(250) + tlv(250), "duplicate Precision", "precision twice")
    bad("request", n + tlv(252, b"\x01"), "must be 0 bytes", "signature request with a value")
    bad("request", n + tlv(252) + tlv(252), "duplicate Signature Request", "signature request twice")
    bad("request", n + tlv(247, b"xx"), "must be 0 bytes", "metadata query with a value")
    bad("request", n + tlv(247) + tlv(247), "duplicate Metadata Query", "metadata query twice")
    bad("request", n + tlv(2, ts(T2)), "not allowed in a request", "receive timestamp in a request")
    bad("request", n + tlv(3, ts(T3)), "not allowed in a request", "send timestamp in a request")
    bad("request", n + tlv(248, bytes(6)), "not allowed in a request", "clock quality in a request")
    bad("request", n + tlv(249, bytes(2)), "not allowed in a request", "error in a request")
    bad("request", n + tlv(251, bytes(2)), "not allowed in a request", "time source in a request")
    bad("request", n + sig_hmac(n), "not allowed in a request", "signature block in a request")
    bad("request", n + tlv(254, b"\x00\x01"), "not zero-filled", "non-zero padding")
    bad("request", n + pad(4) + tlv(253, pair("a", "b")), "follows Padding", "metadata after padding")
    bad("request", n + pad(4) + tlv(100), "follows Padding", "unknown TLV after padding")
    bad("request", n + pad(2) + tlv(250), "follows Padding", "precision after padding")
    bad("request", n + tlv(253, b"\x01\xff\x01a"), "not valid UTF-8", "metadata key 0xff")
    bad("request", n + tlv(253, b"\x02\xc0\x80\x01a"), "not valid UTF-8", "overlong UTF-8 NUL in key")
    bad("request", n + tlv(253, b"\x01a\x03\xed\xa0\x80"), "not valid UTF-8", "UTF-8-encoded surrogate")
    bad("request", n + tlv(253, b"\x01a\x05abc"), "overruns", "metadata value overruns its TLV")
    bad("request", n + tlv(253, b"\x01a"), "length missing", "metadata key without a value")
    bad("request", n + tlv(253, b"\x04sit"), "overruns", "metadata key overruns its TLV")

    c = core()
    bad("response", n, "Receive Timestamp", "nonce only")
    bad("response", n + tlv(2, ts(T2)), "Send Timestamp", "no send timestamp")
    bad("response", n + tlv(3, ts(T3)) + tlv(2, ts(T2)), "Receive Timestamp", "T3 before T2")
    bad("response", n + tlv(250) + tlv(2, ts(T2)) + tlv(3, ts(T3)), "Receive Timestamp",
        "precision ack before the timestamps")
    bad("response", tlv(2, ts(T2)) + n + tlv(3, ts(T3)), "begin with a Nonce", "T2 first")
    bad("response", n + tlv(2, ts(T2)[:7]) + tlv(3, ts(T3)), "must be 8 bytes", "7-byte T2")
    bad("response", n + tlv(2, ts(T2)) + tlv(3, ts(T3) + b"\x00"), "must be 8 bytes", "9-byte T3")
    bad("response", c + tlv(2, ts(T2)), "misplaced or duplicated", "second receive timestamp")
    bad("response", c + n, "duplicate Nonce", "second nonce")
    bad("response", c + tlv(248, bytes(6)) + tlv(248, bytes(6)), "duplicate Clock Quality", "two CQ TLVs")
    bad("response", c + tlv(248, b"\x01\x01" + bytes(4)), "reserved byte", "CQ reserved byte set")
    bad("response", c + tlv(248, bytes(5)), "at least 6", "CQ too short")
    bad("response", c + tlv(248, bytes(6) + b"\xfe"), "not valid UTF-8", "CQ tag 0xfe")
    bad("response", c + tlv(251, b"\x01"), "at least 2", "TSI too short")
    bad("response", c + tlv(251, b"\x01\x01\xc3"), "not valid UTF-8", "TSI info truncated UTF-8")
    bad("response", c + tlv(251, bytes(2)) + tlv(251, bytes(2)), "duplicate Time Source", "two TSI TLVs")
    bad("response", c + tlv(250) + tlv(250), "duplicate Precision", "two precision acks")
    bad("response", c + sig_hmac(c) + tlv(250), "not the last", "signature not last")
    bad("response", c + sig_hmac(c) + sig_hmac(c), "not the last", "two signature blocks")
    bad("response", c + tlv(255, struct.pack(">BIH", 2, 1, 33) + bytes(32)), "declares 33",
        "signature length field larger than the bytes")
    bad("response", c + tlv(255, struct.pack(">BIH", 2, 1, 31) + bytes(32)), "declares 31",
        "signature length field smaller than the bytes")
    bad("response", c + tlv(255, bytes(6)), "at least 7", "signature block too short")
    bad("response", c + tlv(247), "not allowed in a response", "metadata query in a response")
    bad("response", c + tlv(252), "not allowed in a response", "signature request in a response")
    bad("response", c + tlv(249, bytes(2)), "alone", "error TLV after the timestamps")
    bad("response", n + tlv(249, bytes(2)), "Receive Timestamp", "error TLV after a nonce")
    bad("response", tlv(249, b"\x01\x01"), "reserved byte", "error reserved byte set")
    bad("response", tlv(249, b"\x01"), "at least 2", "error TLV too short")
    bad("response", tlv(249, b"\x01\x00\xff"), "not valid UTF-8", "error reason 0xff")
    bad("response", tlv(249, b"\x01\x00") + tlv(255, bytes(3)), "at least 7", "error with broken signature")
    bad("response", c + pad(3) + tlv(248, bytes(6)), "follows Padding", "CQ after padding")
    bad("response", c + tlv(254, b"\x00\x00\x80"), "not zero-filled", "non-zero padding")
    bad("response", c + tlv(253, b"\x01k"), "length missing", "metadata pair cut short")
    return out


def main() -> None:
    keys = {
        "ed25519": {"key_id": ED25519_KEY_ID, "seed": ED25519_SEED.hex(), "public": ED25519_PUBLIC.hex()},
        "hmac": {"key_id": HMAC_KEY_ID, "secret": HMAC_SECRET.hex()},
    }
    public = Ed25519PrivateKey.from_private_bytes(ED25519_SEED).public_key()
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw) == ED25519_PUBLIC
    doc = {"comment": "TSQ draft-01 wire vectors; regenerate with make_wire_vectors.py",
           "keys": keys, "vectors": valid_vectors()}
    (HERE / "wire_valid.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    bad = {"comment": "Malformed TSQ messages: each must raise WireError whose message contains `match`",
           "vectors": malformed_vectors()}
    (HERE / "wire_malformed.json").write_text(json.dumps(bad, indent=1) + "\n")


if __name__ == "__main__":
    main()
