"""Batched UDP (recvmmsg/sendmmsg in the Cython backend, loops in the pure-Python one): the same
datagrams, addresses, kernel RX stamps and TX-stamp keys as one recvmsg/sendto at a time."""

from __future__ import annotations

import socket
import time
from types import ModuleType
from typing import Iterator, List

import pytest

from tsq import _pyclock, clock

BACKENDS: List[ModuleType] = [_pyclock]
try:
    from tsq import _fastclock
    BACKENDS.append(_fastclock)
except ImportError:  # pragma: no cover - not built: the Python backend is still checked
    pass


@pytest.fixture()
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx.setblocking(False)
    assert clock.enable_timestamps(rx, tx=True).rx_software
    assert clock.enable_timestamps(tx, tx=True).tx_software
    # Linux turns RX stamping on for the whole stack lazily (net_enable_timestamp defers the static
    # key to a workqueue when no other socket has it on), and a datagram that arrives before that
    # carries no stamp at all. So wait until a probe comes back stamped; then every datagram is.
    # (From a socket of its own: `tx`'s TX-stamp keys count its sends.)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _ in range(200):
            probe.sendto(b"probe", rx.getsockname())
            time.sleep(0.005)
            stamps = [stamp for _data, _addr, stamp in _pyclock.recv_batch(rx.fileno(), 8)]
            if stamps and stamps[-1] is not None:
                break
        else:
            raise AssertionError("the kernel never stamped a received datagram")
    yield rx, tx
    rx.close()
    tx.close()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_recv_batch_gives_every_datagram_with_its_kernel_stamp(
        pair: tuple[socket.socket, socket.socket], backend: ModuleType) -> None:
    rx, tx = pair
    assert backend.recv_batch(rx.fileno(), 8) == []
    before = clock.realtime_ns()
    payloads = [bytes([i]) * (10 + i) for i in range(12)]
    for data in payloads:
        tx.sendto(data, rx.getsockname())
    time.sleep(0.05)
    after = clock.realtime_ns()
    got = backend.recv_batch(rx.fileno(), 8) + backend.recv_batch(rx.fileno(), 8)
    assert [g[0] for g in got] == payloads
    assert all(g[1] == tx.getsockname() for g in got)
    stamps = [g[2] for g in got]
    assert all(s is not None and before <= s <= after for s in stamps), (before, after, stamps)
    assert stamps == sorted(stamps)
    assert backend.recv_batch(rx.fileno(), 8) == []


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_recv_batch_drops_truncated_datagrams(pair: tuple[socket.socket, socket.socket],
                                              backend: ModuleType) -> None:
    rx, tx = pair
    tx.sendto(bytes(3000), rx.getsockname())
    tx.sendto(b"small", rx.getsockname())
    time.sleep(0.05)
    assert [g[0] for g in backend.recv_batch(rx.fileno(), 8, 2048)] == [b"small"]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_send_batch_and_tx_stamp_keys(pair: tuple[socket.socket, socket.socket], backend: ModuleType) -> None:
    rx, tx = pair
    payloads = [b"a" * 100, b"b" * 200, b"c" * 300]
    assert backend.send_batch(tx.fileno(), socket.AF_INET, payloads, rx.getsockname()) == 3
    assert backend.send_batch(tx.fileno(), socket.AF_INET, [b"x"], ("not-an-address", 1)) == -1
    time.sleep(0.05)
    assert [g[0] for g in backend.recv_batch(rx.fileno(), 8)] == payloads
    stamps = backend.drain_tx_stamps(tx.fileno())
    assert [key for key, _ in stamps] == [0, 1, 2]   # one OPT_ID per datagram, in order
    assert all(ns > 0 for _, ns in stamps)
    assert backend.drain_tx_stamps(tx.fileno()) == []
