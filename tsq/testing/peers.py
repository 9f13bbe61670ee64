"""Test peers that behave like the TSQ implementation deployed in the wild (written from its observed
behaviour, not its code), on aioquic's own asyncio API — a different code path from ours.

What the deployed implementation does (issue 11; docs/wire.md "Stream framing"):
- ALPN `tsq/1`, streams only (no DATAGRAM support), responses of TLVs 1-3, user-space stamps;
- its client sends a bare Nonce request and never sends FIN; it waits for the response;
- its server answers as soon as a request has arrived, and keeps the stream open for seconds
  before FIN.

Plus one modern misbehaviour for draft §6.5: a server that offers DATAGRAM frames (ALPN `tsq`) but
never answers a request sent in one; its streams work.

    python -m tsq.testing.peers legacy-server --cert C --key K [--listen 127.0.0.1:0] [--hold-fin S]
    python -m tsq.testing.peers silent-datagram-server --cert C --key K [--listen ...]
    python -m tsq.testing.peers legacy-client HOST:PORT --ca CA [--count N] [--timeout S]

Servers print `peer listening on HOST:PORT (KIND)` (flushed) once ready; the client prints one JSON object
per exchange ({"offset_ns", "delay_ns"} against this host's clock) and exits 0, or 1 with a reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

from tsq import wire
from tsq.ntp import ntp64_to_unix_ns, unix_ns_to_ntp64
from tsq.quic.trust import DATAGRAM_FRAME_SIZE

LEGACY_ALPN = "tsq/1"


def _now_ntp() -> int:
    return unix_ns_to_ntp64(time.time_ns())


class _Answering(QuicConnectionProtocol):
    """Answers a stream request with TLVs 1-3 as soon as its bytes parse (no FIN needed)."""

    hold_fin_s = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffers: Dict[int, bytearray] = {}
        self._answered: set[int] = set()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            if event.stream_id in self._answered:
                return
            t2 = _now_ntp()
            buf = self._buffers.setdefault(event.stream_id, bytearray())
            buf += event.data
            try:
                req = wire.decode_request(bytes(buf))
            except wire.WireError:
                return
            self._answered.add(event.stream_id)
            body = wire.encode_response(wire.Response(nonce=req.nonce, receive_ts=t2, send_ts=_now_ntp()))
            self._quic.send_stream_data(event.stream_id, body, end_stream=self.hold_fin_s <= 0)
            self.transmit()
            if self.hold_fin_s > 0:
                asyncio.get_running_loop().call_later(self.hold_fin_s, self._fin, event.stream_id)
        # DatagramFrameReceived: the silent-datagram server ignores it (draft §6.5's failure case).

    def _fin(self, stream_id: int) -> None:
        self._quic.send_stream_data(stream_id, b"", end_stream=True)
        self.transmit()


async def _serve(kind: str, host: str, port: int, cert: str, key: str, hold_fin_s: float) -> None:
    if kind == "legacy-server":
        cfg = QuicConfiguration(is_client=False, alpn_protocols=[LEGACY_ALPN])
    else:  # silent-datagram-server: offers DATAGRAM frames, never answers one
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["tsq"],
                                max_datagram_frame_size=DATAGRAM_FRAME_SIZE)
    cfg.load_cert_chain(cert, key)
    protocol = type("Peer", (_Answering,), {"hold_fin_s": hold_fin_s})
    server = await serve(host, port, configuration=cfg, create_protocol=protocol)
    transport: Any = getattr(server, "_transport", None)
    bound = transport.get_extra_info("sockname") if transport is not None else (host, port)
    print(f"peer listening on {bound[0]}:{bound[1]} ({kind})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()


class _Asking(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
        self._buffers: Dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            t4 = time.time_ns()
            buf = self._buffers.setdefault(event.stream_id, bytearray())
            buf += event.data
            try:
                wire.decode_response(bytes(buf))
            except wire.WireError:
                return
            self.answers.put_nowait((bytes(buf), t4))


async def _ask(host: str, port: int, ca: Optional[str], count: int, timeout_s: float) -> int:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[LEGACY_ALPN], server_name="localhost")
    if ca:
        cfg.load_verify_locations(cafile=ca)
    try:
        async with connect(host, port, configuration=cfg, create_protocol=_Asking,
                           wait_connected=True) as proto:
            assert isinstance(proto, _Asking)
            for _ in range(count):
                nonce = os.urandom(wire.NONCE_SIZE)
                sid = proto._quic.get_next_available_stream_id()
                t1 = time.time_ns()
                proto._quic.send_stream_data(sid, wire.encode_request(wire.Request(nonce=nonce)),
                                             end_stream=False)   # the deployed client never sends FIN
                proto.transmit()
                data, t4 = await asyncio.wait_for(proto.answers.get(), timeout_s)
                resp = wire.decode_response(data)
                if not isinstance(resp, wire.Response) or resp.nonce != nonce:
                    print(f"legacy-client: bad response {data.hex()}", file=sys.stderr)
                    return 1
                t2, t3 = ntp64_to_unix_ns(resp.receive_ts, t1), ntp64_to_unix_ns(resp.send_ts, t1)
                print(json.dumps({"offset_ns": ((t2 - t1) + (t3 - t4)) // 2,
                                  "delay_ns": (t4 - t1) - (t3 - t2)}), flush=True)
    except (asyncio.TimeoutError, ConnectionError) as exc:
        print(f"legacy-client: no answer: {exc!r}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tsq.testing.peers", description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["legacy-server", "silent-datagram-server", "legacy-client"])
    ap.add_argument("target", nargs="?", help="legacy-client: HOST:PORT")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("--hold-fin", type=float, default=3.0, metavar="S",
                    help="legacy-server: FIN this long after the response (default 3)")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    if args.kind == "legacy-client":
        if not args.target:
            ap.error("legacy-client needs HOST:PORT")
        host, _, port = args.target.rpartition(":")
        return asyncio.run(_ask(host, int(port), args.ca, args.count, args.timeout))
    if not (args.cert and args.key):
        ap.error("servers need --cert and --key")
    host, _, port = args.listen.rpartition(":")
    hold = args.hold_fin if args.kind == "legacy-server" else 0.0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.kind, host, int(port), args.cert, args.key, hold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
