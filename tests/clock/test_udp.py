"""Kernel-timestamped UDP on real loopback sockets (127.0.0.1 and ::1)."""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Iterator, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tsq._pyclock as py
import tsq.clock as clock

TIMEOUT_S = 5.0

# Set only by .ci/arm-lanes under qemu-user, to the failing checks of .ci/arm/tstamp_probe.c (qemu-user
# answers ENOPROTOOPT to SO_TIMESTAMPNS/SO_TIMESTAMPING); the same lane then runs these tests under
# qemu-system on a real Debian ARM kernel, where they must pass.
_NO_STAMPS = os.environ.get("TSQ_NO_SOCKET_TIMESTAMPS", "")
needs_kernel_stamps = pytest.mark.skipif(bool(_NO_STAMPS), reason=f"no kernel socket stamps: {_NO_STAMPS}")


def _pair(family: int) -> Tuple[socket.socket, socket.socket]:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        rx = socket.socket(family, socket.SOCK_DGRAM)
        rx.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"no {host} loopback here: {exc}")
    tx = socket.socket(family, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname()[:2])
    rx.settimeout(TIMEOUT_S)
    return rx, tx


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def pair(request: pytest.FixtureRequest) -> Iterator[Tuple[socket.socket, socket.socket]]:
    rx, tx = _pair(request.param)
    yield rx, tx
    rx.close()
    tx.close()


def _warm_up(rx: socket.socket, tx: socket.socket) -> None:
    """Wait until the kernel stamps received packets. The first socket to ask for RX timestamps
    turns them on system-wide through a deferred work item (net_enable_timestamp), so a packet
    arriving in the first moments can carry no stamp; a long-lived socket (the QUIC transport's)
    meets this once, at start, and treats the packet as unstamped."""
    for _ in range(200):
        tx.send(b"warm-up")
        if clock.recv_timestamped(rx)[2] is not None:
            return
        time.sleep(0.005)
    raise AssertionError("the kernel never stamped a received packet")


@needs_kernel_stamps
def test_rx_timestamp_between_send_and_receive(pair: Tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    config = clock.enable_timestamps(rx, tx=False)
    assert config.rx_software and config.mode in ("timestamping", "timestampns")
    _warm_up(rx, tx)
    for i in range(20):
        before = time.clock_gettime_ns(time.CLOCK_REALTIME)
        tx.send(b"ping %d" % i)
        data, address, stamp = clock.recv_timestamped(rx)
        after = time.clock_gettime_ns(time.CLOCK_REALTIME)
        assert data == b"ping %d" % i
        assert address[:2] == tx.getsockname()[:2]
        assert stamp is not None and before <= stamp <= after


@needs_kernel_stamps
def test_so_timestampns_fallback_is_parsed(pair: Tuple[socket.socket, socket.socket]) -> None:
    """The older SO_TIMESTAMPNS option (what enable_timestamps falls back to) also yields a stamp."""
    rx, tx = pair
    rx.setsockopt(socket.SOL_SOCKET, py.SO_TIMESTAMPNS_OLD, 1)
    _warm_up(rx, tx)
    before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    tx.send(b"x")
    _data, _address, stamp = clock.recv_timestamped(rx)
    assert stamp is not None and before <= stamp <= time.clock_gettime_ns(time.CLOCK_REALTIME)


def test_no_timestamps_when_not_enabled(pair: Tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    tx.send(b"plain")
    assert clock.recv_timestamped(rx) == (b"plain", tx.getsockname(), None)


def test_non_blocking_raises(pair: Tuple[socket.socket, socket.socket]) -> None:
    rx, _tx = pair
    clock.enable_timestamps(rx)
    rx.setblocking(False)
    with pytest.raises(BlockingIOError):
        clock.recv_timestamped(rx)


@needs_kernel_stamps
def test_tx_timestamps_from_error_queue(pair: Tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    config = clock.enable_timestamps(tx, tx=True)
    if not config.tx_software:
        pytest.skip(f"kernel granted no software TX timestamps: {config}")
    sent = []
    for i in range(5):
        before = time.clock_gettime_ns(time.CLOCK_REALTIME)
        tx.send(b"tx %d" % i)
        sent.append((before, time.clock_gettime_ns(time.CLOCK_REALTIME)))
    stamps = clock.wait_tx_timestamps(tx, 5, TIMEOUT_S)
    assert [s.key for s in stamps] == [0, 1, 2, 3, 4]
    for stamp, (before, after) in zip(stamps, sent):
        assert before <= stamp.realtime_ns <= after
    assert clock.read_tx_timestamps(tx) == []  # drained
    for i in range(5):
        assert rx.recv(100) == b"tx %d" % i


def test_tx_only_when_asked(pair: Tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    config = clock.enable_timestamps(tx, tx=False)
    assert not config.tx_software
    tx.send(b"a")
    assert rx.recv(10) == b"a"
    poller = select.poll()
    poller.register(tx.fileno(), select.POLLERR)
    assert poller.poll(50) == []  # bounded: nothing lands on the error queue
    assert clock.read_tx_timestamps(tx) == []


@needs_kernel_stamps
def test_rx_and_tx_on_one_socket() -> None:
    """The QUIC transport's shape: one socket, both directions timestamped."""
    a, b = _pair(socket.AF_INET)
    # RX stamping switched on system-wide, and kept on by this open pair, before a and b exchange
    # (warming up a and b themselves would put extra TX stamps on their error queues).
    w_rx, w_tx = _pair(socket.AF_INET)
    try:
        clock.enable_timestamps(w_rx, tx=False)
        _warm_up(w_rx, w_tx)
        clock.enable_timestamps(a)
        clock.enable_timestamps(b)
        b.send(b"q")
        _data, peer, t_rx = clock.recv_timestamped(a)
        assert t_rx is not None
        before = time.clock_gettime_ns(time.CLOCK_REALTIME)
        a.sendto(b"r", peer)
        stamps = clock.wait_tx_timestamps(a, 1, TIMEOUT_S)
        assert len(stamps) == 1 and stamps[0].realtime_ns >= before
        b.settimeout(TIMEOUT_S)
        _data, _peer, t_rx2 = clock.recv_timestamped(b)
        assert t_rx2 is not None and t_rx2 >= stamps[0].realtime_ns
        # b's error queue holds the stamp of its one send ("q"), key 0, before a received it
        b_stamps = clock.read_tx_timestamps(b)
        assert [s.key for s in b_stamps] == [0] and b_stamps[0].realtime_ns <= t_rx
        a.settimeout(TIMEOUT_S)  # timeout mode must not make draining an empty queue wait
        started = time.monotonic()
        assert clock.read_tx_timestamps(a) == []
        assert time.monotonic() - started < 1.0
    finally:
        for s_ in (a, b, w_rx, w_tx):
            s_.close()


ANC = st.lists(
    st.tuples(st.sampled_from([socket.SOL_SOCKET, 0, 41]), st.sampled_from([35, 37, 64, 65, 11, 25, 1]),
              st.binary(max_size=64)),
    max_size=4,
)


@given(ancdata=ANC)
def test_ancillary_parser_is_total(ancdata: list) -> None:  # type: ignore[type-arg]
    stamp = py.software_timestamp(ancdata)
    assert stamp is None or isinstance(stamp, int)
