"""The UDP edge under aioquic's sans-IO `QuicConnection`: kernel RX/TX timestamps, late T3 stamping.

aioquic's own asyncio transport reads with `recvfrom` and loses the kernel timestamps. Here we own
the socket: every datagram is read with `recvmsg` and handed on with its kernel RX time converted to
raw ns (T2 on the server, T4 on the client); every datagram sent gets an `SO_TIMESTAMPING` TX key so
its kernel TX time can be matched later (T1 on the client, the server's stamp-to-wire residual).

`PacketStamper` wraps the 1-RTT `CryptoPair.encrypt_packet` of one connection so a TSQ message can
be found in the plaintext of the packet that carries it right before encryption: the server writes
T3 there (the last moment the bytes can still change), the client learns which datagram carried its
request. It relies on aioquic internals (`_cryptos`); when they are not there it does nothing and the
callers fall back to stamping before the packet is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Callable, Optional, Tuple

from aioquic import tls
from aioquic.quic.connection import QuicConnection

from tsq import clock

# Interleaved T3 (like NTP's interleaved mode), carried in Metadata pairs: a client that sends
# `xleave=1` gets `xleave-tx=NONCEHEX:NTP64HEX`, the kernel TX time of the previous response on the
# connection. Other clients never see it (and would ignore the unknown key).
XLEAVE_REQUEST_KEY = "xleave"
XLEAVE_RESPONSE_KEY = "xleave-tx"

Address = Tuple[Any, ...]
# (data, address, rx raw ns, rx realtime ns or None when the kernel gave no stamp)
DatagramHandler = Callable[[bytes, Address, int, Optional[int]], None]
TxHandler = Callable[[int, int], None]  # (OPT_ID key, kernel TX realtime ns)
ErrorHandler = Callable[[OSError], None]


class UdpEndpoint:
    """A non-blocking UDP socket on the running loop, delivering datagrams with kernel RX stamps.

    `kernel_stamps=False` turns kernel stamping off (RX stamps are then read in user space when the
    datagram is read), for comparison with the straightforward approach.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: DatagramHandler,
        *,
        kernel_stamps: bool = True,
        on_tx_stamp: Optional[TxHandler] = None,
        on_error: Optional[ErrorHandler] = None,
    ) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.kernel_stamps = kernel_stamps
        self.rx_kernel = False
        self.tx_kernel = False
        if kernel_stamps:
            granted = clock.enable_timestamps(sock, tx=True)
            self.rx_kernel = granted.rx_software
            self.tx_kernel = granted.tx_software
        self._on_datagram = on_datagram
        self._on_tx_stamp = on_tx_stamp
        self._on_error = on_error
        self._to_raw = clock.RealtimeToRaw()
        self._sent = 0  # datagrams sent: the OPT_ID key of the next one
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self._closed = False

    def realtime_to_raw(self, realtime_ns: int) -> int:
        """A kernel (realtime) stamp on the raw clock, via a fresh (realtime, raw) correlation."""
        return self._to_raw.convert(realtime_ns)

    def send(self, data: bytes, addr: Optional[Address] = None) -> Optional[int]:
        """Send one datagram; returns its TX-timestamp key (None when TX stamps are off or it failed)."""
        try:
            if addr is None:
                self.sock.send(data)
            else:
                self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return None  # QUIC recovers from a lost datagram; a full buffer is congestion
        except OSError as exc:
            if self._on_error is not None:
                self._on_error(exc)
            return None
        key = self._sent
        self._sent += 1
        return key if self.tx_kernel else None

    def drain_tx_stamps(self) -> None:
        """Read the error queue and report each TX stamp (cheap when empty)."""
        if not self.tx_kernel or self._closed:
            return
        for stamp in clock.read_tx_timestamps(self.sock):
            if self._on_tx_stamp is not None:
                self._on_tx_stamp(stamp.key, stamp.realtime_ns)

    def _readable(self) -> None:
        # The error queue makes the fd readable too (EPOLLERR): drain it every time or we spin.
        self.drain_tx_stamps()
        for _ in range(256):  # bounded so one busy socket cannot starve the loop
            if self._closed:
                return
            try:
                if self.rx_kernel:
                    data, addr, rx_realtime = clock.recv_timestamped(self.sock)
                    rx_raw = clock.raw_ns()
                    if rx_realtime is not None:
                        rx_raw = self._to_raw.convert(rx_realtime)
                else:
                    data, addr = self.sock.recvfrom(65535)
                    rx_raw = clock.raw_ns()
                    rx_realtime = None
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ECONNREFUSED on a connected socket (ICMP unreachable)
                if self._on_error is not None:
                    self._on_error(exc)
                return
            self._on_datagram(data, tuple(addr) if addr else (), rx_raw, rx_realtime)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def open_udp_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A UDP socket bound to (host, port); IPv6 sockets accept IPv4 too when bound to '::'."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


class PacketStamper:
    """Finds a marked TSQ message inside the next 1-RTT packet aioquic encrypts, and optionally
    stamps T3 into it just before encryption.

    Use: `arm(needle, t3_offset, stamp)` before `datagrams_to_send()`; `needle` is a unique prefix
    of the message (it starts with the nonce TLV). After the flush, `hit_packet` is the index among
    the 1-RTT packets built in that flush of the one that carried it (-1 if not found) and
    `stamped_realtime_ns` what `stamp` returned.
    """

    def __init__(self, conn: QuicConnection) -> None:
        self._conn = conn
        self._wrapped: Any = None
        self._needle = b""
        self._t3_at = -1
        self._stamp: Optional[Callable[[bytearray, int], int]] = None
        self.packets = 0
        self.hit_packet = -1
        self.stamped_realtime_ns: Optional[int] = None

    def _install(self) -> bool:
        cryptos = getattr(self._conn, "_cryptos", None)
        pair = cryptos.get(tls.Epoch.ONE_RTT) if isinstance(cryptos, dict) else None
        if pair is None or not hasattr(pair, "encrypt_packet"):
            return False
        if pair is self._wrapped:
            return True
        original = pair.encrypt_packet

        def encrypt_packet(plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
            if self._needle:
                at = plain_payload.find(self._needle)
                if at >= 0:
                    self.hit_packet = self.packets
                    self._needle = b""
                    if self._stamp is not None and self._t3_at >= 0:
                        payload = bytearray(plain_payload)
                        self.stamped_realtime_ns = self._stamp(payload, at + self._t3_at)
                        plain_payload = bytes(payload)
            self.packets += 1
            return original(plain_header, plain_payload, packet_number)  # type: ignore[no-any-return]

        pair.encrypt_packet = encrypt_packet
        self._wrapped = pair
        return True

    def arm(
        self, needle: bytes, t3_offset: int = -1, stamp: Optional[Callable[[bytearray, int], int]] = None
    ) -> bool:
        """Watch for `needle` in the next flush; False when the hook cannot be installed."""
        self.packets = 0
        self.hit_packet = -1
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
