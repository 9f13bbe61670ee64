"""The server's fast path for a DATAGRAM exchange on an established connection (compat layer).

A py-spy profile of the server answering DATAGRAM requests puts most of its busy time in aioquic's
generic machinery: `receive_datagram` (header parsing, path and CID bookkeeping, the frame loop,
events) and `datagrams_to_send` (a packet builder per flush, a pass over every kind of pending
frame). A busy TSQ server sees one packet shape far more than any other: a 1-RTT packet carrying a
DATAGRAM request (with PADDING, PING and ACK frames), answered by one 1-RTT packet carrying the ACK
and the DATAGRAM response. This module handles exactly that shape and nothing else.

It reads and writes the same aioquic state the generic path does, in the same order: header
protection, packet number, duplicate window, AEAD, spin bit, ACK processing by aioquic's own loss
recovery, idle timer, received and ACK ranges; on send the packet number, the ACK frame with its
delivery handler, the ACK-of-ACK PING, pacing, the congestion window, the sent packet registered
with loss recovery, the idle timer and the path's byte count. Everything else goes to aioquic
untouched: any other frame type, a key update, a second path or a new CID, a QUIC logger, pending
control frames, stream data, a full congestion window, pacing. Every check runs before any state
changes, so a declined packet is processed by aioquic exactly as if this module did not exist.

Like the rest of tsq.quic.compat, this uses aioquic's internals; `supported()` says whether this
aioquic has them all (else the server never takes the fast path), and tests/quic/test_fast_exchange.py
checks the fast and the generic path against each other.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

try:
    from aioquic import tls
    from aioquic._buffer import Buffer, BufferReadError
    from aioquic._crypto import CryptoError, HeaderProtection
    from aioquic.buffer import size_uint_var
    from aioquic.quic.connection import QuicConnectionError, QuicConnectionState
    from aioquic.quic.packet import QuicPacketType, decode_packet_number, pull_ack_frame, push_ack_frame
    from aioquic.quic.packet_builder import QuicSentPacket
    from aioquic.quic.recovery import MAX_ACK_RANGES
    _IMPORTED = True
except ImportError:  # pragma: no cover - another aioquic layout: the generic path only
    _IMPORTED = False

PADDING, PING, ACK, ACK_ECN, DATAGRAM, DATAGRAM_WITH_LENGTH = 0x00, 0x01, 0x02, 0x03, 0x30, 0x31
_SHORT_FORM = 0xC0         # long-header bit and fixed bit
_FIXED_BIT = 0x40
_RESERVED_1RTT = 0x18
_SPIN_BIT = 0x20
_KEY_PHASE_BIT = 0x04
_PN_SEND_SIZE = 2          # aioquic's PACKET_NUMBER_SEND_SIZE
_SAMPLE_NEEDS = 4 + 16     # header protection samples 16 bytes, 4 after the packet number's start
_TAG = 16
_ACK_ROOM = 64             # an ACK frame of a few ranges; more ranges: the generic path

# The connection attributes both directions read (a missing one: `supported()` is False).
_NEEDED = (
    "_quic_logger", "_state", "_handshake_confirmed", "_close_pending", "_network_paths",
    "host_cid", "_cryptos", "_spaces", "_loss", "_spin_bit", "_spin_highest_pn",
    "_remote_ack_delay_exponent", "_local_ack_delay_exponent", "_close_at", "_idle_timeout",
    "_ack_eliciting_sent_since_receipt", "_ack_delay", "_configuration", "_packet_number",
    "_peer_cid", "_datagrams_pending", "_ping_pending", "_probe_pending", "_handshake_done_pending",
    "_host_cids", "_retire_connection_ids", "_streams_blocked_pending", "_local_max_data",
    "_local_max_streams_bidi", "_local_max_streams_uni", "_streams_queue", "_crypto_streams",
    "_max_datagram_size", "_on_ack_delivery", "_on_ping_delivery", "_pacing_at", "close",
)

Stamp = Callable[[bytearray, int], int]


def supported(quic: Any) -> bool:
    """Whether this connection has every attribute the fast path reads and writes."""
    return (_IMPORTED and callable(getattr(HeaderProtection, "_mask", None))
            and all(hasattr(quic, name) for name in _NEEDED))


class FastExchange:
    """The fast path of one server connection: `receive` a request packet, `send` a response."""

    __slots__ = ("_cid_end", "_pair", "_space", "_zero_rtt_gone", "max_frame", "quic")

    def __init__(self, quic: Any) -> None:
        self.quic = quic
        limit = quic._configuration.max_datagram_frame_size
        self.max_frame = int(limit) if limit else 0
        self._cid_end = 1 + len(quic.host_cid)
        # aioquic keeps one 1-RTT packet space and one 1-RTT CryptoPair per connection for its
        # life (a key update changes the pair's contexts, not the pair): looked up once, not per
        # packet (each lookup hashes an Enum in Python); tests/quic/test_fast_exchange.py checks
        # that they still are after exchanges and a key update.
        self._space = quic._spaces[tls.Epoch.ONE_RTT]
        self._pair = quic._cryptos.get(tls.Epoch.ONE_RTT)
        self._zero_rtt_gone = False

    def _steady(self, addr: Any) -> Any:
        """The 1-RTT CryptoPair when the connection is in the steady state both directions need."""
        quic = self.quic
        if (quic._quic_logger is not None or quic._state is not QuicConnectionState.CONNECTED
                or not quic._handshake_confirmed or quic._close_pending):
            return None
        paths = quic._network_paths
        if len(paths) != 1 or not paths[0].is_validated or paths[0].addr != addr:
            return None
        pair = self._pair
        if pair is None or pair.recv.aead is None or pair.send.aead is None or pair._update_key_requested:
            return None
        return pair

    # ------------------------------------------------------------------------------------ receive
    def receive(self, data: bytes, addr: Any, now: float) -> Optional[List[bytes]]:
        """Process one datagram of this connection: the DATAGRAM payloads it carried ([] when it was
        dropped, as aioquic drops a duplicate or a packet that does not decrypt), or None when
        aioquic must process it instead (nothing has been changed then)."""
        quic = self.quic
        end = self._cid_end
        if (len(data) < end + _SAMPLE_NEEDS or data[0] & _SHORT_FORM != _FIXED_BIT
                or data[1:end] != quic.host_cid):
            return None
        pair = self._steady(addr)
        if pair is None:
            return None
        if not self._zero_rtt_gone:
            zero_rtt = quic._cryptos.get(tls.Epoch.ZERO_RTT)
            if zero_rtt is not None and zero_rtt.recv.aead is not None:
                return None  # the first 1-RTT packet tears the 0-RTT keys down: aioquic does that
            self._zero_rtt_gone = True   # no 0-RTT keys come back once the handshake is confirmed
        recv = pair.recv
        # Header protection (RFC 9001 §5.4), as aioquic's HeaderProtection.remove without copying
        # the whole packet: the mask from the sample 4 bytes after the packet number's start.
        mask = recv.hp._mask(data[end + 4:end + 20])
        first = data[0] ^ (mask[0] & 0x1F)
        if first & _RESERVED_1RTT or (first & _KEY_PHASE_BIT) >> 2 != recv.key_phase:
            return None  # a protocol violation to close on, or a key update: aioquic's
        pn_length = (first & 0x03) + 1
        pn_end = end + pn_length
        truncated = int.from_bytes(bytes(b ^ m for b, m in zip(data[end:pn_end], mask[1:])), "big")
        plain_header = bytes((first,)) + data[1:end] + truncated.to_bytes(pn_length, "big")
        space = self._space
        pn = decode_packet_number(truncated, pn_length * 8, space.expected_packet_number)
        if pn in space.received_packets:
            return []
        try:
            payload = recv.aead.decrypt(data[pn_end:], plain_header, pn)
        except CryptoError:
            return []
        frames = self._parse(payload)
        if frames is None:
            return None
        acks, datagrams, eliciting = frames

        # From here on the packet is the connection's, in aioquic's order.
        if pn > space.expected_packet_number:
            space.expected_packet_number = pn + 1
        if pn > quic._spin_highest_pn:
            quic._spin_bit = bool(first & _SPIN_BIT)
            quic._spin_highest_pn = pn
        loss = quic._loss
        for rangeset, delay_encoded in acks:
            loss.peer_completed_address_validation = True
            try:
                loss.on_ack_received(ack_rangeset=rangeset,
                                     ack_delay=(delay_encoded << quic._remote_ack_delay_exponent) / 1000000,
                                     now=now, space=space)
            except QuicConnectionError as exc:  # pragma: no cover - this aioquic raises none here
                quic.close(error_code=exc.error_code, frame_type=exc.frame_type,
                           reason_phrase=exc.reason_phrase)
                return []
        quic._close_at = now + quic._idle_timeout()
        quic._ack_eliciting_sent_since_receipt = False
        if pn > space.largest_received_packet:
            space.largest_received_packet = pn
            space.largest_received_time = now
        space.ack_queue.add(pn)
        space.received_packets.add(pn)
        if len(space.ack_queue) > MAX_ACK_RANGES:
            space.ack_queue.shift()
        if eliciting and space.ack_at is None:
            space.ack_at = now + quic._ack_delay
        return datagrams

    def nothing_to_send(self) -> bool:
        """After `receive`: whether a flush would send nothing (no ACK due, no control frame queued,
        say by a loss the ACK revealed), so the caller only re-arms the timer."""
        quic = self.quic
        paths = quic._network_paths
        return bool(paths) and self._space.ack_at is None and self._nothing_else_pending(paths[0])

    def _parse(self, payload: bytes) -> Optional[Tuple[List[Tuple[Any, int]], List[bytes], bool]]:
        """The ACKs and DATAGRAMs of a payload of only PADDING, PING, ACK and DATAGRAM frames; None
        for anything else, or a frame aioquic would close the connection on."""
        acks: List[Tuple[Any, int]] = []
        datagrams: List[bytes] = []
        eliciting = False
        size = len(payload)
        buf = Buffer(data=payload)
        try:
            while not buf.eof():
                start = buf.tell()
                kind = buf.pull_uint_var()
                if kind == PADDING:
                    rest = payload[start:]
                    buf.seek(start + len(rest) - len(rest.lstrip(b"\x00")))
                elif kind == PING:
                    eliciting = True
                elif kind in (ACK, ACK_ECN):
                    acks.append(pull_ack_frame(buf))
                    if kind == ACK_ECN:
                        buf.pull_uint_var()
                        buf.pull_uint_var()
                        buf.pull_uint_var()
                elif kind in (DATAGRAM, DATAGRAM_WITH_LENGTH):
                    length = buf.pull_uint_var() if kind == DATAGRAM_WITH_LENGTH else size - buf.tell()
                    datagrams.append(buf.pull_bytes(length))
                    if not self.max_frame or buf.tell() - start - 1 >= self.max_frame:
                        return None
                    eliciting = True
                else:
                    return None
        except (BufferReadError, ValueError):
            return None
        if size == 0:
            return None
        return acks, datagrams, eliciting

    # --------------------------------------------------------------------------------------- send
    def send(self, message: bytes, now: float, t3_offset: int = -1,
             stamp: Optional[Stamp] = None) -> Optional[Tuple[bytes, Optional[int]]]:
        """Build, protect and register the 1-RTT packet answering with `message` in a DATAGRAM frame
        (with the pending ACK): (the datagram to send, what `stamp` returned for the T3 it wrote at
        `t3_offset` of the message right before encryption). None when the generic path must send
        it (nothing has been changed then)."""
        quic = self.quic
        paths = quic._network_paths
        if not paths:
            return None
        path = paths[0]
        pair = self._steady(path.addr)
        if pair is None or not self._nothing_else_pending(path):
            return None
        loss = quic._loss
        if loss._pacer.next_send_time(now=now) is not None:
            return None
        space = self._space
        pn = quic._packet_number
        peer_cid = quic._peer_cid.cid
        header = bytes((_FIXED_BIT | (_SPIN_BIT if quic._spin_bit else 0) | (pair.send.key_phase << 2)
                        | (_PN_SEND_SIZE - 1),)) + peer_cid + (pn & 0xFFFF).to_bytes(2, "big")
        length = len(message)
        frame_head = 1 + size_uint_var(length)
        if quic._max_datagram_size - len(header) - _TAG - frame_head - length < _ACK_ROOM:
            return None
        handlers: List[Tuple[Any, Any]] = []
        ack = space.ack_at is not None and space.ack_at <= now
        # The frames before the message: the ACK (and aioquic's ACK-of-ACK PING), the DATAGRAM's head.
        buf = Buffer(capacity=_ACK_ROOM + 1 + frame_head)
        if ack:
            delay = int((now - space.largest_received_time) * 1000000) >> quic._local_ack_delay_exponent
            ranges = len(space.ack_queue)
            if 2 * (ranges + 1) * 8 > _ACK_ROOM - 1:
                return None  # push_ack_frame would have to drop ranges: the generic path
            buf.push_uint_var(ACK)
            push_ack_frame(buf, space.ack_queue, delay, _ACK_ROOM - 1)
            handlers.append((quic._on_ack_delivery, (space, space.largest_received_packet)))
            if ranges > 1 and pn % 8 == 0:   # aioquic's ACK-of-ACK trigger
                buf.push_uint_var(PING)
                handlers.append((quic._on_ping_delivery, ((),)))
        buf.push_uint_var(DATAGRAM_WITH_LENGTH)
        buf.push_uint_var(length)
        prefix = buf.data
        sent_bytes = len(header) + len(prefix) + length + _TAG
        if loss.congestion_window - loss.bytes_in_flight < sent_bytes:
            return None

        # From here on the packet is sent: state changes in aioquic's order.
        quic._pacing_at = None
        if ack:
            space.ack_at = None
        plain = bytearray(prefix)
        plain += message
        stamped = stamp(plain, len(prefix) + t3_offset) if stamp is not None and t3_offset >= 0 else None
        packet: bytes = pair.send.encrypt_packet(header, bytes(plain), pn)
        quic._packet_number = pn + 1
        sent = QuicSentPacket(epoch=tls.Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True,
                              is_crypto_packet=False, packet_number=pn, packet_type=QuicPacketType.ONE_RTT,
                              sent_time=now, sent_bytes=len(packet), delivery_handlers=handlers)
        loss.on_packet_sent(packet=sent, space=space)
        if not quic._ack_eliciting_sent_since_receipt:
            quic._close_at = now + quic._idle_timeout()
            quic._ack_eliciting_sent_since_receipt = True
        loss._pacer.update_after_send(now=now)
        path.bytes_sent += len(packet)
        return packet, stamped

    def _nothing_else_pending(self, path: Any) -> bool:
        """Whether the packet aioquic would build now holds nothing but the ACK and this DATAGRAM."""
        quic = self.quic
        if (quic._datagrams_pending or quic._ping_pending or quic._probe_pending
                or quic._handshake_done_pending or path.remote_challenges or quic._retire_connection_ids
                or quic._streams_blocked_pending):
            return False
        for stream in quic._streams_queue:
            # A stream answered but not yet acknowledged is a no-op for aioquic's packet builder; one
            # that is finished (to be discarded), or has data, STOP_SENDING or RESET_STREAM to send
            # is not.
            if (stream.is_finished or stream.receiver.stop_pending or stream.sender.reset_pending
                    or not (stream.is_blocked or stream.sender.buffer_is_empty)):
                return False
        if any(not cid.was_sent for cid in quic._host_cids):
            return False
        max_data = quic._local_max_data
        if max_data.used * 2 > max_data.value or max_data.value != max_data.sent:
            return False
        for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
            # aioquic holds MAX_STREAMS back while the peer has more streams left to open than the
            # update would grant (`_write_connection_limits`): only a due one is pending.
            if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
                return False
        crypto_stream = quic._crypto_streams.get(tls.Epoch.ONE_RTT)
        return crypto_stream is None or bool(crypto_stream.sender.buffer_is_empty)



__all__ = ["FastExchange", "supported"]
