"""The relay's field-fault modes on real loopback sockets: NAT rebinding (a carrier-grade NAT's
mapping expiry) and delay bursts. (The relay's basic impairments are tested in tests/quic.)"""

from __future__ import annotations

import socket
import time
from typing import List, Tuple

from tsq.testing.relay import Impairment, UdpRelay


def udp(timeout: float = 2.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(timeout)
    return sock


def ping(client: socket.socket, server: socket.socket, relay: UdpRelay, text: bytes) -> Tuple[int, bytes]:
    """Send through the relay; the server answers; return the client port the server saw and the answer."""
    client.sendto(text, ("127.0.0.1", relay.port))
    data, addr = server.recvfrom(100)
    server.sendto(data.upper(), addr)
    back, _ = client.recvfrom(100)
    return int(addr[1]), back


def test_mapping_expires_after_idle_time_and_the_server_sees_a_new_port() -> None:
    server, client = udp(), udp()
    with UdpRelay(server.getsockname(), nat_idle_s=0.3) as relay:
        p1, b1 = ping(client, server, relay, b"a")
        p2, _ = ping(client, server, relay, b"b")      # busy: the same mapping
        time.sleep(0.5)                                 # idle past expiry
        p3, b3 = ping(client, server, relay, b"c")
        assert (b1, b3) == (b"A", b"C")
        assert p1 == p2 and p3 != p1
        # The server answering the old port reaches nobody: the NAT dropped the mapping.
        server.sendto(b"late", ("127.0.0.1", p1))
        client.settimeout(0.3)
        try:
            got = client.recvfrom(100)[0]
        except socket.timeout:
            got = b""
        assert got == b"" and relay.counters.nat_dropped == 1 and relay.counters.rebinds == 1
    server.close()
    client.close()


def test_rebind_every_changes_the_port_even_while_busy() -> None:
    server, client = udp(), udp()
    ports: List[int] = []
    with UdpRelay(server.getsockname(), rebind_every_s=0.25) as relay:
        t_end = time.monotonic() + 1.3
        while time.monotonic() < t_end:
            ports.append(ping(client, server, relay, b"x")[0])
            time.sleep(0.05)
    assert len(set(ports)) >= 4 and relay.counters.rebinds >= 3
    server.close()
    client.close()


def test_delay_bursts_add_hundreds_of_ms_sometimes() -> None:
    server, client = udp(), udp()
    # Bursts most of the time, adding ~150 ms on average, in the forward direction only.
    fwd = Impairment(delay_s=0.001, burst_every_s=0.05, burst_length_s=1.0, burst_delay_s=0.15)
    delays: List[float] = []
    with UdpRelay(server.getsockname(), forward=fwd, seed=2) as relay:
        for _ in range(20):
            t0 = time.monotonic()
            ping(client, server, relay, b"x")
            delays.append(time.monotonic() - t0)
            time.sleep(0.03)
    assert max(delays) > 0.05 and min(delays) >= 0.001
    server.close()
    client.close()


def test_relay_process_passes_rebinding_and_bursts_to_the_command_line() -> None:
    from tsq.testing.daemon import RelayProcess

    server, client = udp(5.0), udp()
    with RelayProcess(server.getsockname()[1], forward=Impairment(burst_every_s=0.5, burst_delay_s=0.01),
                      backward=Impairment(), nat_idle_s=0.3) as relay:
        assert "--nat-idle-s" in relay.args and "--fwd-burst-every-s" in relay.args
        p1, _ = ping(client, server, relay, b"a")    # type: ignore[arg-type]
        time.sleep(0.6)
        p2, _ = ping(client, server, relay, b"b")    # type: ignore[arg-type]
        assert p1 != p2
    server.close()
    client.close()
