"""The UDP edge under aioquic's sans-IO `QuicConnection`: kernel RX/TX timestamps.

aioquic's own asyncio transport reads with `recvfrom` and loses the kernel timestamps. Here we own
the socket: every datagram is read with `recvmsg` and handed on with its kernel RX time converted to
raw ns (T2 on the server, T4 on the client); every datagram sent gets an `SO_TIMESTAMPING` TX key so
its kernel TX time can be matched later (T1 on the client, the server's stamp-to-wire residual).

With `batch=True` (the server) reads take up to `BATCH` datagrams per recvmmsg, each with its own
kernel RX stamp, and `send_many` hands a connection's burst (a handshake flight) to one sendmmsg;
`on_batch_done` runs after each batch so the owner can flush each connection it touched once.
Where the Cython backend is not built the same calls loop over recvmsg/sendto.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Callable, List, Optional, Tuple

from tsq import clock

Address = Tuple[Any, ...]
# (data, address, rx raw ns, rx realtime ns or None when the kernel gave no stamp)
DatagramHandler = Callable[[bytes, Address, int, Optional[int]], None]
TxHandler = Callable[[int, int], None]  # (OPT_ID key, kernel TX realtime ns)
ErrorHandler = Callable[[OSError], None]
BATCH = 32            # datagrams per recvmmsg
READ_LIMIT = 256      # datagrams per readable event, so one busy socket cannot starve the loop


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
        batch: bool = False,
        on_batch_done: Optional[Callable[[], None]] = None,
    ) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.batch = batch
        self._fd = sock.fileno()
        self._family = int(sock.family)
        self._on_batch_done = on_batch_done
        self.kernel_stamps = kernel_stamps
        self.rx_kernel = False
        self.tx_kernel = False
        if kernel_stamps:
            granted = clock.enable_timestamps(sock, tx=True)
            self.rx_kernel = granted.rx_software
            self.tx_kernel = granted.tx_software
        self.batching = batch and self.rx_kernel   # reads in batches, `on_batch_done` after each
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

    def send_many(self, datagrams: List[bytes], addr: Optional[Address]) -> None:
        """Send several datagrams to one address (one sendmmsg when batching); no TX keys wanted."""
        if not self.batching or addr is None or len(datagrams) < 2:
            for data in datagrams:
                self.send(data, addr)
            return
        try:
            sent = clock.send_batch(self._fd, self._family, datagrams, addr)
        except OSError as exc:
            if self._on_error is not None:
                self._on_error(exc)
            return
        if sent < 0:  # not a numeric address of this socket's family: let Python resolve it
            for data in datagrams:
                self.send(data, addr)
            return
        self._sent += sent

    def drain_tx_stamps(self) -> None:
        """Read the error queue and report each TX stamp (cheap when empty)."""
        if not self.tx_kernel or self._closed:
            return
        for key, realtime_ns in clock.drain_tx_stamps(self._fd):
            if self._on_tx_stamp is not None:
                self._on_tx_stamp(key, realtime_ns)

    def _readable(self) -> None:
        # The error queue makes the fd readable too (EPOLLERR): drain it every time or we spin.
        self.drain_tx_stamps()
        if self.batching:
            self._read_batches()
            return
        for _ in range(READ_LIMIT):
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

    def _read_batches(self) -> None:
        done = 0
        while done < READ_LIMIT and not self._closed:
            try:
                batch = clock.recv_batch(self._fd, BATCH)
            except OSError as exc:
                if self._on_error is not None:
                    self._on_error(exc)
                return
            if not batch:
                return
            for data, addr, rx_realtime in batch:
                if self._closed:
                    return
                rx_raw = self._to_raw.convert(rx_realtime) if rx_realtime is not None else clock.raw_ns()
                self._on_datagram(data, addr, rx_raw, rx_realtime)
            done += len(batch)
            if self._on_batch_done is not None:
                self._on_batch_done()
            if len(batch) < BATCH:
                return

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
