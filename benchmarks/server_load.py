"""Exchanges per second one TSQ server process sustains, beside a minimal aioquic asyncio server.

    python3 benchmarks/server_load.py [--seconds 3] [--conns 1,10,100]

Both servers run in their own process on loopback; this process drives them with N concurrent
connections (closed loop: each connection sends its next request when the previous is answered),
in datagram and stream mode. Printed per cell: answered exchanges per second, and the server
process's CPU time over the run, so `exch/CPU-s` compares the servers even when the (Python,
single-process) driver is the bottleneck. The baseline is aioquic's own asyncio server
(`aioquic.asyncio.serve`, `recvfrom`, user-space stamps) answering the same TLV exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tsq import clock, wire
from tsq.quic.client import TsqClient, TsqError, TsqInvalidResponse
from tsq.quic.trust import ALPN_TSQ, DATAGRAM_FRAME_SIZE, generate_self_signed, spki_pin_pem

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


# ------------------------------------------------------------------------------------- baseline
def respond(data: bytes) -> Optional[bytes]:
    try:
        req = wire.decode_request(data)
    except wire.WireError:
        return None
    builder = wire.ResponseBuilder(req, clock.unix_ns_to_ntp64(clock.realtime_ns()),
                                   pad_to=len(data) if req.precision else None)
    clock.stamp_ntp64(builder.buffer, builder.send_ts_offset)
    return builder.finish()


def serve_baseline(port: int, cert: str, key: str) -> None:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import DatagramFrameReceived, QuicEvent, StreamDataReceived

    class Proto(QuicConnectionProtocol):
        streams: Dict[int, bytearray]

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, DatagramFrameReceived):
                out = respond(event.data)
                if out is not None:
                    self._quic.send_datagram_frame(out)
                    self.transmit()
            elif isinstance(event, StreamDataReceived):
                streams = self.__dict__.setdefault("streams", {})
                buf = streams.setdefault(event.stream_id, bytearray())
                buf += event.data
                if event.end_stream:
                    out = respond(bytes(streams.pop(event.stream_id)))
                    self._quic.send_stream_data(event.stream_id, out or wire.encode_error(1, "bad"),
                                                end_stream=True)
                    self.transmit()

    async def main() -> None:
        config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN_TSQ],
                                   max_datagram_frame_size=DATAGRAM_FRAME_SIZE)
        config.load_cert_chain(cert, key)
        await serve("127.0.0.1", port, configuration=config, create_protocol=Proto)
        print(f"baseline listening on 127.0.0.1:{port}", flush=True)
        await asyncio.Future()

    asyncio.run(main())


# ------------------------------------------------------------------------------------- driver
def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, pin: str, conns: int, mode: str, seconds: float) -> Tuple[int, int]:
    clients = [TsqClient(f"127.0.0.1:{port}", pin=pin, interleaved=False, timeout_s=2.0)
               for _ in range(conns)]
    await asyncio.gather(*(c.connect() for c in clients))
    await asyncio.gather(*(c.exchange(mode) for c in clients))  # warm-up
    answered = failed = 0
    stop_at = time.monotonic() + seconds

    async def loop(c: TsqClient) -> None:
        nonlocal answered, failed
        while time.monotonic() < stop_at:
            try:
                await c.exchange(mode)
                answered += 1
            except TsqInvalidResponse:
                answered += 1  # answered; only our loopback sanity check disliked it
            except TsqError:
                failed += 1

    await asyncio.gather(*(loop(c) for c in clients))
    await asyncio.gather(*(c.close() for c in clients))
    return answered, failed


def start(cmd: List[str]) -> Tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server did not start: {cmd}")
        m = re.search(r"listening on \S+:(\d+)", line)
        if m:
            return proc, int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conns", default="1,10,100")
    ap.add_argument("--serve-baseline", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1], args.serve_baseline[2])
        return 0
    tmp = tempfile.mkdtemp(prefix="tsq-load-")
    cert_pem, key_pem = generate_self_signed(["localhost"])
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    with open(cert, "wb") as fh:
        fh.write(cert_pem)
    with open(key, "wb") as fh:
        fh.write(key_pem)
    pin = spki_pin_pem(cert_pem)
    servers = {
        "tsq server": [sys.executable, "-m", "tsq.server", "--listen", "127.0.0.1:0", "--cert", cert,
                       "--key", key, "--rate-per-source", "1e9", "--max-connections-per-source",
                       "100000", "--stats-interval", "0"],
        "aioquic asyncio baseline": [sys.executable, os.path.abspath(__file__), "--serve-baseline",
                                     "24433", cert, key],
    }
    print(f"{'server':<26} {'mode':<9} {'conns':>5} {'exch/s':>9} {'server CPU':>10} {'exch/CPU-s':>11}")
    for name, cmd in servers.items():
        proc, port = start(cmd)
        try:
            for mode in ("datagram", "stream"):
                for n in (int(x) for x in args.conns.split(",")):
                    cpu0 = cpu_seconds(proc.pid)
                    t0 = time.monotonic()
                    answered, failed = asyncio.run(drive(port, pin, n, mode, args.seconds))
                    wall = time.monotonic() - t0
                    cpu = cpu_seconds(proc.pid) - cpu0
                    rate = answered / args.seconds
                    print(f"{name:<26} {mode:<9} {n:>5} {rate:>9.0f} {cpu / wall * 100:>9.0f}% "
                          f"{answered / max(cpu, 1e-9):>11.0f}" + (f"  failed {failed}" if failed else ""),
                          flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
