"""`tsq pin CERT|HOST[:PORT]`: the SPKI pin (`sha256/BASE64`) to give gateways as `--pin`.

For a PEM file it prints the pin of its first certificate. For a live server it makes a QUIC
handshake (ALPN tsq, or tsq/1), without trusting anything, and prints the pin of the certificate the
server presented: compare it out of band (on the server, `tsq pin /var/lib/tsq/cert.pem` or the pin
its start line prints) before configuring it — anyone on the path could have answered.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any, Optional

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from cryptography import x509

from tsq.quic import compat
from tsq.quic.client import parse_server
from tsq.quic.trust import client_configuration, spki_pin
from tsq.session.alpn import ALPN_LEGACY, ALPN_TSQ


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("pin", help="print the SPKI pin of a certificate file or of a live server",
                       description=__doc__)
    p.add_argument("target", metavar="CERT|HOST[:PORT]", help="a PEM file, or a server (default port 443)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="handshake timeout (default 5)")
    p.set_defaults(func=run)


def _describe(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = cert.subject.rfc4514_string()
    return f"{names}; valid until {cert.not_valid_after_utc:%Y-%m-%d}"


async def fetch_certificate(host: str, port: int, timeout_s: float) -> Any:
    """The leaf certificate a server presents in a QUIC handshake (nothing is verified)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(addr)
    config = client_configuration(host, insecure=True, alpn=(ALPN_TSQ, ALPN_LEGACY))
    quic = QuicConnection(configuration=config)
    done: asyncio.Future[Any] = loop.create_future()

    def flush() -> None:
        for data, _ in quic.datagrams_to_send(now=loop.time()):
            try:
                sock.send(data)
            except OSError as exc:
                if not done.done():
                    done.set_exception(exc)

    def readable() -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if not done.done():
                done.set_exception(exc)
            return
        quic.receive_datagram(data, addr, now=loop.time())
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.HandshakeCompleted) and not done.done():
                done.set_result(compat.peer_certificate(quic))
            elif isinstance(event, events.ConnectionTerminated) and not done.done():
                done.set_exception(OSError(event.reason_phrase or f"error 0x{event.error_code:x}"))
        flush()

    loop.add_reader(sock.fileno(), readable)
    try:
        quic.connect(addr, now=loop.time())
        flush()
        cert = await asyncio.wait_for(done, timeout_s)
        quic.close()
        flush()
        return cert
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


def run(args: argparse.Namespace) -> int:
    target: str = args.target
    cert: Optional[x509.Certificate] = None
    try:
        with open(target, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        data = None
    except OSError as exc:
        print(f"tsq pin: {target}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if data is not None:
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            print(f"tsq pin: {target}: not a PEM certificate", file=sys.stderr)
            return 2
        print(f"{spki_pin(cert)}  {target} ({_describe(cert)})")
        return 0
    try:
        host, port = parse_server(target, 443)
    except ValueError as exc:
        print(f"tsq pin: {exc}", file=sys.stderr)
        return 2
    try:
        cert = asyncio.run(fetch_certificate(host, port, args.timeout))
    except (OSError, asyncio.TimeoutError) as exc:
        timed_out = isinstance(exc, asyncio.TimeoutError)
        reason = f"no QUIC handshake within {args.timeout:g} s" if timed_out else str(exc)
        print(f"tsq pin: {target}: {reason}", file=sys.stderr)
        return 1
    if cert is None:
        print(f"tsq pin: {target}: the certificate could not be read (aioquic internals moved: "
              "see `tsq --version`)", file=sys.stderr)
        return 1
    print(f"{spki_pin(cert)}  {target} ({_describe(cert)})")
    print("tsq pin: fetched without verification: compare it with the server's own before using it",
          file=sys.stderr)
    return 0
