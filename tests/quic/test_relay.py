"""The UDP impairment relay: delay, loss, duplication, per direction, on real loopback sockets."""

from __future__ import annotations

import socket
import time

from tsq.testing.relay import Impairment, UdpRelay


def echo_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_relays_both_ways_with_the_configured_delay() -> None:
    server = echo_socket()
    with UdpRelay(server.getsockname(), forward=Impairment(delay_s=0.02),
                  backward=Impairment(delay_s=0.01)) as relay:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        server.settimeout(5)
        t0 = time.monotonic()
        client.sendto(b"ping", ("127.0.0.1", relay.port))
        data, addr = server.recvfrom(100)
        t1 = time.monotonic()
        server.sendto(b"pong", addr)
        back, _ = client.recvfrom(100)
        t2 = time.monotonic()
        assert (data, back) == (b"ping", b"pong")
        assert 0.018 <= t1 - t0 < 1.0 and 0.008 <= t2 - t1 < 1.0
        client.close()
    server.close()


def test_loss_and_duplication_are_applied() -> None:
    server = echo_socket()
    server.settimeout(0.3)
    with UdpRelay(server.getsockname(), forward=Impairment(loss=0.5, duplicate=0.5), seed=3) as relay:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(200):
            client.sendto(str(i).encode(), ("127.0.0.1", relay.port))
        got = []
        try:
            while True:
                got.append(server.recvfrom(100)[0])
        except socket.timeout:
            pass
        client.close()
    server.close()
    assert relay.counters.dropped > 50 and relay.counters.duplicated > 20
    assert len(got) == 200 - relay.counters.dropped + relay.counters.duplicated
    assert len(set(got)) < len(got)  # duplicates arrived


def test_impairment_delays_are_sampled_per_copy() -> None:
    import random

    rng = random.Random(0)
    imp = Impairment(delay_s=0.002, jitter_s=0.0005, reorder=1.0, reorder_s=0.01)
    for _ in range(100):
        (d,) = imp.delays(rng)
        assert 0.0115 <= d <= 0.0125
    assert Impairment(loss=1.0).delays(rng) == []


def test_relay_process_passes_its_impairment_to_the_command_line_relay() -> None:
    from tsq.testing.daemon import RelayProcess

    server = echo_socket()
    server.settimeout(5)
    with RelayProcess(server.getsockname()[1], forward=Impairment(delay_s=0.03),
                      backward=Impairment(loss=1.0)) as relay:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(0.5)
        t0 = time.monotonic()
        client.sendto(b"ping", ("127.0.0.1", relay.port))
        data, addr = server.recvfrom(100)
        assert data == b"ping" and time.monotonic() - t0 >= 0.028
        server.sendto(b"pong", addr)
        try:
            client.recvfrom(100)
            raise AssertionError("the backward leg loses everything")
        except socket.timeout:
            pass
        client.close()
    assert relay.proc.poll() is not None   # stopped with the context
    server.close()
