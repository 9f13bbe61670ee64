"""One aioquic `QuicConnection` on a `UdpEndpoint`: flushing with the stamping hook, and its timer.

Client and server share this: `flush()` sends everything aioquic has queued and, when a TSQ
message was marked with `stamper.arm(...)`, says which datagram carried it (its TX-timestamp key and
the raw time read right before it was sent); the timer calls aioquic's `handle_timer` when due, then
the owner's `on_timer` (which turns the connection's events into session input), then flushes.

`PacketStamper` wraps the 1-RTT `encrypt_packet` of one connection (tsq.quic.compat) so a TSQ message
can be found in the plaintext of the packet that carries it right before encryption: the server
writes T3 there (the last moment the bytes can still change), the client learns which datagram
carried its request. The datagram is recognised by the packet's AEAD tag (its last 16 bytes), so
extra packets aioquic builds in the same flush (ACKs, path probes after a NAT rebinding, coalesced
handshake packets) can never shift the match onto another datagram.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Optional

from aioquic.quic.connection import QuicConnection

from tsq import clock
from tsq.quic import compat
from tsq.quic.transport import Address, UdpEndpoint

TAG_BYTES = 16   # AES-GCM and ChaCha20-Poly1305 tags: unique per packet
EARLY_S = 0.0005  # a timer firing this much before aioquic's deadline only re-arms


class PacketStamper:
    """Finds a marked TSQ message inside the next 1-RTT packets aioquic encrypts; optionally stamps
    T3 into it just before encryption.

    `arm(needle, t3_offset, stamp)` before flushing; `needle` is a unique prefix of the message (it
    starts with the Nonce TLV). After the flush, `hit_tag` identifies the protected packet that
    carried it (None if not found) and `stamped_realtime_ns` is what `stamp` returned.
    """

    def __init__(self, conn: QuicConnection) -> None:
        self._conn = conn
        self._wrapped: Any = None
        self._needle = b""
        self._t3_at = -1
        self._stamp: Optional[Callable[[bytearray, int], int]] = None
        self.hit_tag: Optional[bytes] = None
        self.stamped_realtime_ns: Optional[int] = None

    def _install(self) -> bool:
        pair = compat.one_rtt_crypto(self._conn)
        if pair is None:
            return False
        if pair is self._wrapped:
            return True
        original = pair.encrypt_packet

        def encrypt_packet(plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
            hit = False
            if self._needle:
                at = plain_payload.find(self._needle)
                if at >= 0:
                    hit = True
                    self._needle = b""
                    if self._stamp is not None and self._t3_at >= 0:
                        payload = bytearray(plain_payload)
                        self.stamped_realtime_ns = self._stamp(payload, at + self._t3_at)
                        plain_payload = bytes(payload)
            packet: bytes = original(plain_header, plain_payload, packet_number)
            if hit:
                self.hit_tag = packet[-TAG_BYTES:]
            return packet

        pair.encrypt_packet = encrypt_packet
        self._wrapped = pair
        return True

    def arm(self, needle: bytes, t3_offset: int = -1,
            stamp: Optional[Callable[[bytearray, int], int]] = None) -> bool:
        """Watch for `needle` in the next flush; False when the hook cannot be installed."""
        self.hit_tag = None
        self.stamped_realtime_ns = None
        if not self._install():
            self._needle = b""
            return False
        self._needle = needle
        self._t3_at = t3_offset
        self._stamp = stamp
        return True

    def disarm(self) -> None:
        self._needle = b""
        self._stamp = None

    def release(self) -> None:
        """Drop the references to the connection (a closed connection is freed at once)."""
        self.disarm()
        self._wrapped = None
        self._conn = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Flushed:
    """Where the marked message went: the datagram's TX-stamp key and the raw time before its send."""

    found: bool                 # the marked packet was identified among the datagrams sent
    tx_key: Optional[int]       # for the kernel TX stamp (None: no TX stamps, or the send failed)
    sent_raw: Optional[int]     # raw ns read right before sending it (the first datagram if not found)


class QuicDriver:
    """Packets and timers of one connection on the running loop."""

    def __init__(self, quic: QuicConnection, endpoint: UdpEndpoint, on_timer: Callable[[], None],
                 addr: Optional[Address] = None) -> None:
        self.quic = quic
        self.endpoint = endpoint
        self.addr = addr                      # None: the endpoint's socket is connected
        self.stamper = PacketStamper(quic)
        self._on_timer = on_timer
        self._loop = asyncio.get_running_loop()
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at: Optional[float] = None
        self.closed = False

    def now(self) -> float:
        return self._loop.time()

    def flush(self, marked: bool = False) -> Optional[Flushed]:
        """Send what aioquic has queued; with `marked`, report the datagram of the armed message.

        The caller registers the returned TX key, then calls `endpoint.drain_tx_stamps()`, so the
        kernel's stamp of that datagram always finds its registration."""
        if self.closed:
            return None
        datagrams = self.quic.datagrams_to_send(now=self._loop.time())
        if not marked and len(datagrams) > 1 and self.addr is not None:
            # A burst with nothing to find in it (a handshake flight): one sendmmsg.
            self.endpoint.send_many([payload for payload, _ in datagrams], self.addr)
            self._arm_timer()
            return None
        tag = self.stamper.hit_tag if marked else None
        result: Optional[Flushed] = None
        for index, (payload, addr) in enumerate(datagrams):
            hit = tag is not None and tag in payload
            sent_raw = clock.raw_ns() if marked and result is None and (hit or tag is None) else None
            key = self.endpoint.send(payload, self.addr if self.addr is not None else addr)
            if marked and result is None and (hit or (tag is None and index == 0)):
                result = Flushed(found=hit, tx_key=key if hit else None, sent_raw=sent_raw)
        self._arm_timer()
        return result

    def send_built(self, packet: bytes) -> Optional[Flushed]:
        """Send one datagram the fast path built and registered (tsq.quic.fast_exchange): it is the
        marked one. The timer is re-armed, as after a flush."""
        if self.closed:
            return None
        sent_raw = clock.raw_ns()
        key = self.endpoint.send(packet, self.addr)
        self._arm_timer()
        return Flushed(found=True, tx_key=key, sent_raw=sent_raw)

    def rearm(self) -> None:
        """Re-arm the timer from aioquic's state (after it changed without a flush)."""
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self.closed:
            return
        at = self.quic.get_timer()
        if self._timer is not None and self._timer_at is not None and at is not None and at >= self._timer_at:
            # A deadline that moved later (the idle and loss timers after each exchange): the armed
            # timer fires first and `_fire` re-arms for the new one, instead of a cancel and a new
            # timer per packet.
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.closed:
            return
        now = self._loop.time()
        at = self.quic.get_timer()
        if at is not None and at > now + EARLY_S:  # armed for a deadline that has since moved on
            self._timer_at = at
            self._timer = self._loop.call_at(at, self._fire)
            return
        self.quic.handle_timer(now=now)
        self._on_timer()
        if not self.closed:
            self.flush()

    def close(self) -> None:
        """Stop the timer and drop every reference back to the owner (no cycle outlives it)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.stamper.release()
        self._on_timer = _nothing


def _nothing() -> None:
    return None
