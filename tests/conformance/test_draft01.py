"""Conformance with draft-mccollum-ntp-tsq-01, sections 6-8: the clause table, and its checks.

Every MUST / MUST NOT of §6-§8 (61 of them; the draft says REQUIRED nowhere there) has one row below,
quoted as the draft words it, with the tests that check it and how. A few SHOULD/MAY rows (id with a
letter) say which non-mandatory behaviour is checked too. The tests live in one module per section
(test_s6_1.py ... test_s8.py; test_bad_input.py is issue 11's "Bad input" end to end); each test's
docstring quotes its clause. "codec" = tsq.wire/tsq.auth directly; "session" = the sans-IO client or
server session driven with bytes and made-up clocks; "QUIC" = real QUIC on loopback with real
certificates: our TsqServer (a ServerThread, misbehaving when scripted) and TsqClient, or a raw
aioquic probe client / bare aioquic server that are not ours. Signatures are verified with
`cryptography`/`hmac` directly. Where the implementation deviates, the test fails (it is not
weakened); deliberate choices where the draft is open are in docs/wire.md.

The tests at the bottom keep this table honest: each quote is found in its section of the draft
(when the draft text is at hand: $TSQ_DRAFT, or ../shared/spec beside the checkout), every MUST of
§6-§8 falls in exactly one quote, every test named exists, and every test of a section module is
named here.

Clause table
------------
6.1-1   "Clients MUST negotiate the TSQ protocol using the ALPN identifier "tsq" during the QUIC
        handshake."
        tests: test_s6_1.py::TestS6_1::test_client_negotiates_alpn_tsq
               test_s6_1.py::TestS6_1::test_client_offers_nothing_but_tsq
               test_s6_1.py::TestS6_1::test_sessions_offer_exactly_tsq_by_default
        how:   QUIC against bare aioquic servers preferring other ALPNs; the sessions' ALPN lists
6.1-a   "allowing multiple independent exchanges to occur simultaneously over a single connection."
        tests: test_s6_1.py::TestS6_1::test_exchanges_may_share_one_connection
        how:   QUIC, concurrent stream exchanges on one connection (MAY)
6.2-1   "Clients and servers MUST capture the following timestamps:"
        tests: test_s6_2.py::TestS6_2::test_all_four_timestamps_are_captured
               test_s6_2.py::TestS6_2::test_t4_is_when_the_response_is_complete
               test_s6_2.py::TestS6_2::test_t2_is_when_the_request_is_complete
        how:   QUIC, kernel stamps, T1 <= T2 <= T3 <= T4 on one clock; split messages (framing rule)
6.2-a   "These formulas are equivalent to those used in NTP"
        tests: test_s6_2.py::TestS6_2::test_offset_and_rtt_are_the_draft_formulas
        how:   arithmetic of tsq.sync.exchange
6.3.1-1 "TLV Type values 4 through 246 are reserved for future use and MUST NOT be assigned without
        IETF review."
        tests: test_s6_3_1.py::TestS6_3_1::test_types_4_to_246_are_not_assigned
        how:   not testable from outside (a registry rule); checked: this implementation assigns none
6.3.1-2 "Future extensions MUST use unique type values and follow the TLV format rules defined in
        this section."
        tests: test_s6_3_1.py::TestS6_3_1::test_own_extension_uses_no_new_type
        how:   binds future documents, not testable as such; checked: our own extension (interleaved
               T3) uses Metadata pairs, so the wire carries only Table 1 types (QUIC, probe)
6.3.1-3 "Implementations MUST ignore unknown TLV types unless explicitly required by policy."
        tests: test_s6_3_1.py::TestS6_3_1::test_codec_ignores_unknown_types
               test_s6_3_1.py::TestS6_3_1::test_server_ignores_unknown_types
               test_s6_3_1.py::TestS6_3_1::test_client_ignores_unknown_types
        how:   codec; QUIC probe to our server; scripted server to our client (types 0, 4-246)
6.3.1-a "| 1 | Nonce | Request | Yes |"
        tests: test_s6_3_1.py::TestS6_3_1::test_nonce_and_both_timestamps_are_required
        how:   codec (Table 1 "Required: Yes" for types 1, 2, 3)
6.3.2-1 "In Datagram Mode, all TLVs MUST still appear in a well-defined order, beginning with the
        Nonce (Type 1)."
        tests: test_s6_3_2.py::TestS6_3_2Structure::test_datagram_messages_begin_with_the_nonce
        how:   codec; QUIC probe (server drops); session (client requests, discards)
6.3.2-2 "implementations MUST treat the entire datagram payload as a single TSQ message."
        tests: test_s6_3_2.py::TestS6_3_2Structure::test_a_datagram_is_one_message
        how:   QUIC probe (two requests in one datagram: dropped); session (two responses: rejected)
6.3.2-3 "Partial or fragmented TLVs MUST NOT be used."
        tests: test_s6_3_2.py::TestS6_3_2Structure::test_no_partial_tlvs
        how:   codec; QUIC probe (dropped; server's datagrams are whole TLVs); session
6.3.2-4 "TLVs MUST be processed sequentially"
        tests: test_s6_3_2.py::TestS6_3_2Structure::test_tlvs_are_processed_in_wire_order
        how:   codec (positional meaning, wire order kept, first defect reported)
6.3.2-5 "unknown TLV types MUST be ignored unless policy dictates otherwise."
        tests: test_s6_3_2.py::TestS6_3_2Structure::test_unknown_types_are_ignored
               test_s6_3_1.py::TestS6_3_1::test_server_ignores_unknown_types
               test_s6_3_1.py::TestS6_3_1::test_client_ignores_unknown_types
        how:   codec (signed message with an unknown TLV); the §6.3.1 tests
6.3.2-6 "The Signature Block TLV, if present, MUST appear last."
        tests: test_s6_3_2.py::TestS6_3_2SignatureBlock::test_signature_block_is_last
        how:   codec; QUIC probe, both modes
6.3.2-7 "If supported, the server MUST include a valid Signature Block TLV (Type 255) in the
        response."
        tests: test_s6_3_2.py::TestS6_3_2SignatureRequest::test_signing_server_signs_validly
        how:   QUIC probe, Ed25519 and HMAC, both modes, verified independently
6.3.2-8 "These TLVs MUST follow standard TLV structure and be included after the required fields in
        the message."
        tests: test_s6_3_2.py::TestS6_3_2OptionalTlvs::test_optional_tlvs_follow_the_required_ones
        how:   codec; QUIC probe with every optional TLV
6.3.2-9 "The Metadata Query Request TLV contains no value bytes and MUST appear only in TSQ
        Requests."
        tests: test_s6_3_2.py::TestS6_3_2MetadataQuery::test_metadata_query_is_empty_and_request_only
        how:   codec; session (client request); QUIC probe (server responses)
6.3.2-10 "This TLV MUST appear alone in the response, without timestamps or other TLVs."
        tests: test_s6_3_2.py::TestS6_3_2Error::test_error_appears_alone
        how:   codec; QUIC probe (every Error our server sends)
6.3.2-11 "MUST be set to zero. Reserved for future use."
        tests: test_s6_3_2.py::TestS6_3_2Error::test_error_reserved_byte_is_zero
        how:   codec; QUIC probe
6.3.2-12 "The reason phrase MUST NOT exceed 255 bytes."
        tests: test_s6_3_2.py::TestS6_3_2Error::test_error_reason_is_at_most_255_bytes
        how:   codec (long reasons cut); QUIC probe
6.3.2-13 "This TLV MUST only appear in TSQ Responses sent over QUIC streams."
        tests: test_s6_3_2.py::TestS6_3_2Error::test_error_only_on_streams
        how:   QUIC probe (malformed, unsigned-server, rate-limited datagrams get silence); session
6.3.2-14 "Clients receiving an Error TLV MUST treat the request as failed"
        tests: test_s6_3_2.py::TestS6_3_2Error::test_error_fails_the_request
        how:   session
6.3.2-15 "MUST NOT attempt to parse any additional TLVs in the response."
        tests: test_s6_3_2.py::TestS6_3_2Error::test_nothing_after_an_error_is_parsed
        how:   session (Error + Padding / timestamps / junk must still report the server's code)
6.3.2-16 "If a Signature Block is present, the Error TLV MUST be included in the signed data."
        tests: test_s6_3_2.py::TestS6_3_2Error::test_signed_error_covers_the_error_tlv
        how:   codec, verified independently (our server never signs an Error)
6.3.2-17 "Servers MAY omit this field, and clients MUST tolerate its absence."
        tests: test_s6_3_2.py::TestS6_3_2TimeSourceInfo::test_absence_is_tolerated
        how:   session; QUIC
6.3.2-18 "Clients MUST ignore unknown keys."
        tests: test_s6_3_2.py::TestS6_3_2Metadata::test_unknown_keys_are_ignored
        how:   QUIC, both modes
6.3.2-19 "MUST be serialized in a canonical form before inclusion in a signed message."
        tests: test_s6_3_2.py::TestS6_3_2Metadata::test_signed_metadata_is_canonical
        how:   QUIC probe, unsorted configuration, verified independently
6.3.2-20 "key-value pairs MUST be encoded in lexicographic order by key, with exact UTF-8 byte
        sequences preserved."
        tests: test_s6_3_2.py::TestS6_3_2Metadata::test_pairs_in_lexicographic_key_order_bytes_preserved
        how:   codec; QUIC probe (order by UTF-8 bytes, NFC/NFD kept, several TLVs)
6.3.2-21 "Implementations MUST NOT reorder, collapse, or normalize UTF-8 content during parsing or
        signing."
        tests: test_s6_3_2.py::TestS6_3_2Metadata::test_no_reordering_or_normalising
        how:   codec; session (non-canonical signed response verifies over received bytes)
6.3.2-22 "The value MUST consist of zero-value bytes (0x00)."
        tests: test_s6_3_2.py::TestS6_3_2Padding::test_padding_is_zero_bytes
        how:   codec; session (client); QUIC probe (server)
6.3.2-23 "Padding TLVs MUST appear only at the end of a TSQ message."
        tests: test_s6_3_2.py::TestS6_3_2Padding::test_padding_only_at_the_end
        how:   codec; QUIC probe
6.3.2-24 "They MUST be included in the Signature TLV coverage if present."
        tests: test_s6_3_2.py::TestS6_3_2Padding::test_padding_is_signed
        how:   QUIC probe, verified independently
6.3.2-25 "Type 0 is reserved and MUST NOT be used for padding."
        tests: test_s6_3_2.py::TestS6_3_2Padding::test_type_0_is_never_padding
        how:   codec (every size); session (client); QUIC probe (server, many request sizes)
6.3.2-26 "MUST be the final TLV in the message."
        tests: test_s6_3_2.py::TestS6_3_2SignatureBlock::test_signature_block_is_last
        how:   as 6.3.2-6
6.3.2-27 "If included, the Signature Block MUST cover the Nonce (Type 1), Receive Timestamp (Type 2),
        Send Timestamp (Type 3), and all included optional TLVs, in canonical TLV order."
        tests: test_s6_3_2.py::TestS6_3_2SignatureBlock::test_signature_covers_every_tlv_before_it
        how:   QUIC probe with every optional TLV; "canonical order" is this codec's (docs/wire.md)
6.3.2-28 "If a client includes a Signature Request TLV (Type 252), and the server supports
        authentication, then the response MUST include TLV 255."
        tests: test_s6_3_2.py::TestS6_3_2SignatureBlock::test_datagram_signature_request_gets_a_signature
        how:   QUIC probe, datagram mode
6.3.2-29 "Clients operating in Datagram Mode without authentication MUST treat all responses as
        unauthenticated and advisory only."
        tests: test_s6_3_2.py::TestS6_3_2SignatureBlock::test_unsigned_datagrams_never_pass
        how:   partly testable: "advisory" has no defined behaviour (docs/wire.md); checked (session):
               no unsigned or badly signed datagram response passes a client requiring signatures
6.4-1   "If the server also supports Precision Mode, it MUST include a zero-length"
        tests: test_s6_4.py::TestS6_4::test_supporting_server_acknowledges
               test_s6_4.py::TestS6_4::test_lengths_are_equal
        how:   QUIC probe; no ack where equal lengths are impossible (docs/wire.md)
6.4-2   "If the server does not support Precision Mode, it MUST omit this TLV."
        tests: test_s6_4.py::TestS6_4::test_server_without_precision_omits_the_ack
        how:   QUIC probe, server with precision off
6.4-3   "Clients MUST interpret the absence of the acknowledgment TLV as lack of support"
        tests: test_s6_4.py::TestS6_4::test_client_reads_no_ack_as_no_support
               test_s6_4.py::TestS6_4::test_client_waits_for_the_acknowledged_length
        how:   session (completion without and with the ack); QUIC
6.4-4   "both endpoints MUST ensure that the total byte length of the TSQ Request and Response
        messages are identical."
        tests: test_s6_4.py::TestS6_4::test_lengths_are_equal
               test_s6_4.py::TestS6_4::test_client_pads_its_requests
        how:   QUIC probe, many sizes, signed and not, both modes; session (client requests)
6.4-5   "implementations MUST include a Padding TLV (Type 254) to pad the message as needed."
        tests: test_s6_4.py::TestS6_4::test_server_pads_with_padding_tlvs
               test_s6_4.py::TestS6_4::test_client_pads_its_requests
        how:   QUIC probe; session
6.4-6   "Padding MUST consist entirely of zero-value bytes"
        tests: test_s6_4.py::TestS6_4::test_server_pads_with_padding_tlvs
        how:   QUIC probe
6.4-7   "and MUST appear after all other TLVs except the Signature Block."
        tests: test_s6_4.py::TestS6_4::test_server_pads_with_padding_tlvs
        how:   QUIC probe
6.4-8   "If used with the Signature Block TLV, Padding MUST appear immediately before it."
        tests: test_s6_4.py::TestS6_4::test_padding_immediately_before_the_signature
        how:   QUIC probe, both modes, both algorithms
6.4-9   "current implementations MUST treat the TLV as zero-length."
        tests: test_s6_4.py::TestS6_4::test_precision_tlv_with_a_value_is_zero_length
        how:   codec; QUIC probe (request with a value answered); session (ack with a value)
6.5-1   "Clients MUST be prepared to retry using stream-based transport."
        tests: test_s6_5.py::TestS6_5::test_client_retries_over_streams
               test_s6_5.py::TestS6_5::test_no_datagrams_to_a_server_without_them
               test_s6_5.py::TestS6_5::test_session_falls_back_after_unanswered_datagrams
        how:   QUIC (server that never answers datagrams; server without them); session constants
6.5-a   "If the server replies using a DATAGRAM, the mode is established."
        tests: test_s6_5.py::TestS6_5::test_datagram_answer_establishes_the_mode
        how:   QUIC
6.5-b   "The message format is identical to stream-based TSQ"
        tests: test_s6_5.py::TestS6_5::test_same_message_format_in_both_modes
        how:   QUIC probe
6.6-1   "TSQ implementations MUST validate all TLV structures."
        tests: test_s6_6.py::TestS6_6::test_tlv_structures_are_validated
        how:   codec (malformed vectors); QUIC probe (Error 1 / drop); session
6.6-2   "Clients MUST validate that the echoed nonce in the TSQ Response matches the nonce originally
        sent in the request."
        tests: test_s6_6.py::TestS6_6::test_echoed_nonce_is_validated
        how:   session, both modes
6.6-3   "clients MUST discard the response, log a diagnostic warning, and treat the exchange as
        invalid."
        tests: test_s6_6.py::TestS6_6::test_bad_nonce_is_discarded_logged_and_invalid
        how:   QUIC, scripted server; counted, WARNING log naming the server, no sample
6.6-4   "Clients MUST NOT apply any synchronization adjustment based on a TSQ Response be applied
        unless all four timestamps"
        tests: test_s6_6.py::TestS6_6::test_no_sample_unless_all_four_timestamps_are_valid
               test_s6_6.py::TestS6_6::test_interleaved_t3_is_validated_too
               test_s6_6.py::TestS6_6::test_rejected_answer_refines_nothing
               test_bad_input.py::test_no_sample_ever_from_a_server_that_always_lies
        how:   session (each anomaly); QUIC (sample()/burst() against a lying server)
6.6-a   "When encountering such anomalies, clients SHOULD discard the result"
        tests: test_s6_6.py::TestS6_6::test_no_sample_unless_all_four_timestamps_are_valid
        how:   session
7-1     "Implementations MUST verify that the negotiated ALPN value is exactly "tsq"."
        tests: test_s7.py::TestS7Alpn::test_server_accepts_exactly_tsq
               test_s7.py::TestS7Alpn::test_server_session_closes_anything_but_tsq
               test_s7.py::TestS7Alpn::test_legacy_alpn_is_opt_in_visible_and_limited
        how:   QUIC probe; session; tsq/1 only on opt-in (documented deviation, docs/wire.md)
7-2     "Clients MUST reject any QUIC connection where the negotiated ALPN does not exactly match
        "tsq"."
        tests: test_s7.py::TestS7Alpn::test_client_rejects_anything_but_tsq
               test_s7.py::TestS7Alpn::test_client_session_rejects_anything_but_tsq
        how:   QUIC against bare aioquic servers (other ALPN, none); session
7-3     "implementations MUST validate echoed nonces and timestamp monotonicity"
        tests: test_s7.py::TestS7Replay::test_replayed_response_is_rejected
               test_s7.py::TestS7Replay::test_non_monotonic_timestamps_are_rejected
        how:   QUIC (a server replaying its previous answer); session
7-4     "Servers that receive this TLV MUST include a valid Signature Block TLV (Type 255) in the
        response or fail the request."
        tests: test_s7.py::TestS7Signatures::test_signature_request_gets_signature_or_failure
               test_s7.py::TestS7Alpn::test_legacy_alpn_is_opt_in_visible_and_limited
        how:   QUIC probe: signed, or Error 3 on streams / silence in datagrams, Error 3 over tsq/1
7-5     "If no Signature Block is present in the response, the client MUST treat the exchange as
        unauthenticated and discard it."
        tests: test_s7.py::TestS7Signatures::test_unsigned_response_is_discarded
               test_s7.py::TestS7Signatures::test_stripped_signature_over_quic
        how:   session; QUIC (server stripping its signatures)
7-6     "Shared keys MUST be provisioned out-of-band"
        tests: none
        how:   not testable from an implementation's outside (provisioning); this implementation has
               no in-band key path: keys come only from files (tsq.auth.load_signer/load_verify_key)
7-7     "clients MUST treat this TLV as advisory."
        tests: test_s7.py::TestS7TimeSourceInfo::test_time_source_info_is_advisory
        how:   session (any claim, the sample stands on its stamps)
7-8     "It MUST NOT be used as a substitute for cryptographic integrity or freshness validation."
        tests: test_s7.py::TestS7TimeSourceInfo::test_time_source_info_is_no_substitute
        how:   session (stratum 1 does not rescue a bad nonce, signature or T3)
7.1-a   "deployments MAY enforce signature usage via the Signature Request TLV"
        tests: test_s7_1.py::TestS7_1::test_signatures_can_be_enforced_in_datagram_mode
        how:   QUIC, datagram mode, good and forging servers
7.1-b   "Messages may be lost, reordered, or duplicated."
        tests: test_s7_1.py::TestS7_1::test_duplicated_datagrams_make_one_sample
               test_s7_1.py::TestS7_1::test_reordered_datagrams_pair_by_nonce
        how:   QUIC, scripted server
7.1-c   "responses can be spoofed by an on-path attacker unless validated"
        tests: test_bad_input.py::test_unsolicited_datagrams_are_discarded
        how:   QUIC, scripted server sending DATAGRAMs nobody asked for
8-1     "When enabled, the TSQ Response MUST include a TLV extension of type 255 (0xFF), known as the
        Signature Block."
        tests: test_s8.py::TestS8::test_signature_block_is_included_and_laid_out
        how:   QUIC probe, both algorithms, byte layout (algorithm, key id, length)
8-2     "The data to be signed MUST consist of the exact, contiguous byte sequence of all TLVs in the
        message"
        tests: test_s8.py::TestS8::test_signed_data_is_every_byte_before_the_block
        how:   QUIC probe, verified independently, byte flips
8-3     "The Signature Block itself MUST NOT be included in the signed data."
        tests: test_s8.py::TestS8::test_block_is_not_in_the_signed_data
        how:   QUIC probe, verified independently
8-4     "Clients that require signatures but do not receive them MUST treat the response as
        unauthenticated."
        tests: test_s8.py::TestS8::test_required_but_missing_is_unauthenticated
        how:   session, both modes
8-5     "Failure to comply MUST result in rejection of the response by the client."
        tests: test_s8.py::TestS8::test_noncompliant_signatures_are_rejected
        how:   QUIC, scripted server: missing, other key, key id, algorithm, coverage, place, length
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

HERE = Path(__file__).resolve().parent
SECTIONS = ("6", "6.1", "6.2", "6.3", "6.3.1", "6.3.2", "6.4", "6.5", "6.6", "7", "7.1", "8")
MUSTS_IN_SECTIONS_6_TO_8 = 61
DRAFT_NAME = "draft-mccollum-ntp-tsq-01.txt"


@dataclass
class Row:
    clause: str                       # e.g. "6.3.2-11"; a letter instead of a number: SHOULD/MAY
    quote: str
    tests: List[str] = field(default_factory=list)
    how: str = ""

    @property
    def section(self) -> str:
        return self.clause.rsplit("-", 1)[0]

    @property
    def mandatory(self) -> bool:
        return self.clause.rsplit("-", 1)[1].isdigit()


def parse_table(doc: str) -> List[Row]:
    """The rows of the clause table in `doc`."""
    rows: List[Row] = []
    text = doc.split("Clause table\n------------\n", 1)[1]
    quote_open = False
    where = ""
    for line in text.splitlines():
        head = re.match(r'^(\d+(?:\.\d+)*-(?:\d+|[a-z]))\s+"(.*)$', line)
        body = line.strip()
        if head:
            rows.append(Row(head.group(1), '"' + head.group(2)))
            quote_open = not head.group(2).endswith('"')
            where = "quote"
        elif quote_open:
            rows[-1].quote += " " + body
            quote_open = not body.endswith('"')
        elif body.startswith("tests:"):
            where = "tests"
            rows[-1].tests += [t for t in body[len("tests:"):].split() if t != "none"]
        elif body.startswith("how:"):
            where = "how"
            rows[-1].how = body[len("how:"):].strip()
        elif body and where == "tests":
            rows[-1].tests += body.split()
        elif body and where == "how":
            rows[-1].how += " " + body
    for row in rows:
        assert row.quote.startswith('"') and row.quote.endswith('"'), row
        row.quote = row.quote[1:-1]
    return rows


ROWS = parse_table(__doc__ or "")


def draft_path() -> Optional[Path]:
    candidates = [os.environ.get("TSQ_DRAFT", ""), str(HERE.parents[2] / "shared" / "spec" / DRAFT_NAME)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def draft_sections(text: str) -> Dict[str, str]:
    """Section number -> its text (page headers and footers removed, whitespace collapsed)."""
    sections: Dict[str, List[str]] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        if re.match(r"^(McCollum|Internet-Draft)\s", line):
            continue
        heading = re.match(r"^(\d+(?:\.\d+)*)\.\s+\S", line)
        if heading:
            current = heading.group(1)
            sections[current] = []
        if current is not None:
            sections[current].append(line)
    return {k: re.sub(r"\s+", " ", " ".join(v)).replace("\u2019", "'") for k, v in sections.items()}


def test_table_has_one_row_per_must() -> None:
    """The table's mandatory rows are the draft's 61 MUST / MUST NOT of §6-§8, once each."""
    mandatory = [r for r in ROWS if r.mandatory]
    assert len(mandatory) == MUSTS_IN_SECTIONS_6_TO_8
    assert len({r.clause for r in ROWS}) == len(ROWS)
    assert sum(len(re.findall(r"\bMUST\b", r.quote)) for r in mandatory) == MUSTS_IN_SECTIONS_6_TO_8
    assert all(r.section in SECTIONS for r in ROWS)
    assert all(r.tests or "not testable" in r.how for r in ROWS)


def test_quotes_are_the_drafts_words_and_cover_every_must() -> None:
    """Each quote is in its section of the draft, once; every MUST of §6-§8 is inside exactly one
    mandatory row's quote."""
    path = draft_path()
    if path is None:
        pytest.skip(f"{DRAFT_NAME} not found (set TSQ_DRAFT); the table's other checks still ran")
    sections = draft_sections(path.read_text(encoding="utf-8"))
    covered: Dict[Tuple[str, int], str] = {}
    for row in ROWS:
        text = sections[row.section]
        assert text.count(row.quote) == 1, f"{row.clause}: quote found {text.count(row.quote)} times"
        start = text.index(row.quote)
        for m in re.finditer(r"\bMUST\b", row.quote):
            key = (row.section, start + m.start())
            assert key not in covered, f"{row.clause} and {covered.get(key)} quote the same MUST"
            covered[key] = row.clause
    musts = {(s, m.start()) for s in SECTIONS for m in re.finditer(r"\bMUST\b", sections[s])}
    assert len(musts) == MUSTS_IN_SECTIONS_6_TO_8
    assert set(covered) == musts, sorted(musts - set(covered))


def _defined(path: Path) -> Set[str]:
    """`Class::test` and module-level `test` names defined in a test module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
    return names


def test_every_named_test_exists_and_every_section_test_is_named() -> None:
    """The table names only tests that exist, and every test of the section modules is named."""
    named = {t for r in ROWS for t in r.tests}
    for ref in named:
        module, _, name = ref.partition("::")
        assert (HERE / module).is_file(), ref
        assert name in _defined(HERE / module), ref
    for module in sorted(HERE.glob("test_s*.py")):
        for name in _defined(module):
            if name.rpartition("::")[2].startswith("test_"):
                assert f"{module.name}::{name}" in named, f"{module.name}::{name} is not in the table"
