"""What one TSQ server process costs, side by side with a plain aioquic server and chronyd's NTP server.

    python3 benchmarks/server_load.py [--seconds 3] [--conns 1,10,100,1000] [--handshakes 200]
                                      [--idle 500] [--sections load,handshakes,memory,bytes,workers]
                                      [--no-chrony]

Every server runs in its own process on loopback; this process drives it. Sections:

- **load**: exchanges per second with N connections, closed loop (each sends its next request when
  the previous is answered), datagram and stream mode; `exch/CPU-s` divides by the *server*
  process's CPU time, which compares servers even where this single Python driver is the
  bottleneck. chronyd (`chronyd -x`, never touches the clock) is driven by benchmarks/ntp_load.c
  (compiled here with `cc`): N UDP sockets, one NTP request outstanding each.
- **handshakes**: connections opened and closed, per server CPU-second (TSQ's include the Retry).
- **memory**: server RSS growth per idle connection (after one exchange each), and for TSQ the
  worst case: every connection with all its client streams holding the most a stream may hold
  (4 KB in order, never completed; and 4 KB out of order, the first packet of each stream lost).
- **bytes**: UDP payload per direction through a counting relay: handshake (with Retry), the
  first exchange (with the warm-up), then per steady exchange (ACKs included), and per day at
  each poll interval, beside NTP's 48 B.
- **workers**: `tsq server --workers 2` (SO_REUSEPORT) against one process at the largest N.

The baseline is aioquic's own asyncio server (`aioquic.asyncio.serve`, `recvfrom`, user-space stamps,
aioquic's default 1 MB windows and 1 ms ACK delay) answering the same TLV exchange. The machine is
shared: quote the ratios of one run, not absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tsq import clock, wire
from tsq.quic.client import TsqClient, TsqError, TsqInvalidResponse
from tsq.quic.server import MAX_STREAMS
from tsq.quic.trust import ALPN_TSQ, DATAGRAM_FRAME_SIZE, generate_self_signed, spki_pin_pem

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NTP_PAYLOAD = 48
IDLE_TIMEOUT_S = 150.0        # the TSQ server's default (tsq.quic.server.DEFAULT_IDLE_TIMEOUT_S)
FAILURES: List[str] = []      # why exchanges failed, printed with their row


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


# ------------------------------------------------------------------------------------- processes
def tree(pid: int) -> List[int]:
    """`pid` and its descendants (worker processes)."""
    kids: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _summed(pid: int, name: str, parse: Callable[[str], float]) -> float:
    """`parse(/proc/P/name)` summed over `pid` and its descendants (gone ones count 0)."""
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/{name}") as fh:
                total += parse(fh.read())
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_seconds(pid: int) -> float:
    def parse(stat: str) -> float:
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return _summed(pid, "stat", parse)


def rss_kb(pid: int) -> int:
    def parse(status: str) -> float:
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))

    return int(_summed(pid, "status", parse))


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


def write_keys(tmp: str) -> Tuple[str, str, str]:
    """An ephemeral certificate and key in `tmp`: (cert path, key path, SPKI pin)."""
    cert_pem, key_pem = generate_self_signed(["localhost"])
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    with open(cert, "wb") as fh:
        fh.write(cert_pem)
    with open(key, "wb") as fh:
        fh.write(key_pem)
    return cert, key, spki_pin_pem(cert_pem)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


# ------------------------------------------------------------------------------------- QUIC driver
async def open_clients(port: int, pin: str, n: int, parallel: int = 32) -> List[TsqClient]:
    clients = [TsqClient(f"127.0.0.1:{port}", pin=pin, interleaved=False, timeout_s=5.0,
                         connect_timeout_s=30.0) for _ in range(n)]
    gate = asyncio.Semaphore(parallel)

    async def one(c: TsqClient) -> None:
        async with gate:
            await c.connect()

    await asyncio.gather(*(one(c) for c in clients))
    return clients


async def drive(port: int, pin: str, conns: int, mode: str, seconds: float,
                cpu_of: int) -> Tuple[int, int, float, float, int]:
    """(answered, failed, wall s, server CPU s, answers the client's draft §6.6 checks discarded)
    of `seconds` of closed-loop exchanges."""
    clients = await open_clients(port, pin, conns)
    # Warm-up; a failed sanity check (a sub-µs negative loopback RTT) is an answer, not a crash.
    await asyncio.gather(*(c.exchange(mode) for c in clients), return_exceptions=True)
    answered = failed = 0
    cpu0, t0 = cpu_seconds(cpu_of), time.monotonic()
    stop_at = t0 + seconds

    async def loop(c: TsqClient) -> None:
        nonlocal answered, failed
        while time.monotonic() < stop_at:
            try:
                await c.exchange(mode)
                answered += 1
            except TsqInvalidResponse:
                answered += 1  # answered; only our loopback sanity check disliked it
            except TsqError as exc:
                failed += 1
                FAILURES.append(str(exc))

    discarded0 = sum(c.discarded_responses for c in clients)
    await asyncio.gather(*(loop(c) for c in clients))
    wall, cpu = time.monotonic() - t0, cpu_seconds(cpu_of) - cpu0
    discarded = sum(c.discarded_responses for c in clients) - discarded0
    await asyncio.gather(*(c.close() for c in clients))
    return answered, failed, wall, cpu, discarded


async def handshakes(port: int, pin: str, count: int, cpu_of: int,
                     parallel: int = 8) -> Tuple[int, float, float]:
    gate = asyncio.Semaphore(parallel)
    done = 0

    async def one() -> None:
        nonlocal done
        async with gate:
            c = TsqClient(f"127.0.0.1:{port}", pin=pin, connect_timeout_s=30.0)
            try:
                await c.connect()
                done += 1
            except TsqError:
                pass
            await c.close()

    cpu0, t0 = cpu_seconds(cpu_of), time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    return done, time.monotonic() - t0, cpu_seconds(cpu_of) - cpu0


# ------------------------------------------------------------------------------------- chronyd
def chronyd_server(tmp: str) -> Optional[Tuple[subprocess.Popen[str], int, str]]:
    chronyd = shutil.which("chronyd") or shutil.which("chronyd", path="/usr/sbin:/sbin")
    cc = shutil.which("cc") or shutil.which("gcc")
    if chronyd is None or cc is None:
        return None
    loadgen = os.path.join(tmp, "ntp_load")
    subprocess.run([cc, "-O2", "-o", loadgen, os.path.join(ROOT, "benchmarks", "ntp_load.c")], check=True)
    port = 11125
    conf = os.path.join(tmp, "chronyd.conf")
    with open(conf, "w") as fh:
        fh.write(f"port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 10\ncmdport 0\n"
                 f"pidfile {tmp}/chronyd.pid\n")
    # -x: never touch the system clock. -u root: the temp dir is root's. -d: foreground.
    proc = subprocess.Popen([chronyd, "-x", "-d", "-u", "root", "-f", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    time.sleep(1.0)
    return proc, port, loadgen


def drive_ntp(loadgen: str, port: int, conns: int, seconds: float, pid: int) -> Tuple[int, int, float, float]:
    cpu0 = cpu_seconds(pid)
    out = subprocess.run([loadgen, "127.0.0.1", str(port), str(conns), str(seconds)], capture_output=True,
                         text=True, check=True).stdout.split()
    fields = dict(zip(out[::2], out[1::2]))
    return int(fields["answered"]), int(fields["lost"]), float(fields["seconds"]), cpu_seconds(pid) - cpu0


# ------------------------------------------------------------------------------------- bytes
class CountingRelay:
    """A UDP relay on loopback that counts datagrams and payload bytes each way (one client)."""

    def __init__(self, upstream: Tuple[str, int]) -> None:
        self.upstream = upstream
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.client: Optional[Tuple[str, int]] = None
        self.up = [0, 0]      # datagrams, bytes client -> server
        self.down = [0, 0]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.front.getsockname()[1])

    def snapshot(self) -> Tuple[int, int, int, int]:
        return self.up[0], self.up[1], self.down[0], self.down[1]

    def _run(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.05)
            for sock in ready:
                data, addr = sock.recvfrom(65535)
                if sock is self.front:
                    self.client = addr
                    self.up[0] += 1
                    self.up[1] += len(data)
                    self.back.sendto(data, self.upstream)
                elif self.client is not None:
                    self.down[0] += 1
                    self.down[1] += len(data)
                    self.front.sendto(data, self.client)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.front.close()
        self.back.close()


async def bytes_per_exchange(port: int, pin: str, mode: str, count: int = 50) -> Dict[str, Tuple[int, ...]]:
    relay = CountingRelay(("127.0.0.1", port))
    try:
        c = TsqClient(f"127.0.0.1:{relay.port}", pin=pin, server_name="localhost")
        a = relay.snapshot()
        await c.connect()
        await asyncio.sleep(0.2)
        b = relay.snapshot()
        await c.exchange(mode)                 # with the warm-up exchange after the handshake
        await asyncio.sleep(0.2)
        d = relay.snapshot()
        for _ in range(count):
            await c.sample(mode)
            await asyncio.sleep(0.05)          # the client's ACK of the answer goes out (1 ms)
        await asyncio.sleep(0.2)
        e = relay.snapshot()
        await c.close()
        await asyncio.sleep(0.2)
        f = relay.snapshot()
    finally:
        relay.close()

    def diff(x: Tuple[int, ...], y: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(j - i for i, j in zip(x, y))

    return {"handshake": diff(a, b), "first": diff(b, d), "steady": diff(d, e), "close": diff(e, f),
            "count": (count,)}


def sniff_loopback(seconds: float, udp_port: int, tcp_port: int, out: Dict[str, List[int]]) -> None:
    """Payload sizes of UDP datagrams and TCP segments on `lo` to/from the ports (needs root)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    sock.bind(("lo", 0))
    sock.settimeout(0.1)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            pkt, addr = sock.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:  # loopback shows each packet twice
            continue
        ip = pkt[14:]
        if len(ip) >= 20 and ip[0] >> 4 == 4:
            proto, body = ip[9], ip[(ip[0] & 15) * 4:]
        elif len(ip) >= 40 and ip[0] >> 4 == 6:
            proto, body = ip[6], ip[40:]
        else:
            continue
        if len(body) < 20:
            continue
        sport, dport = int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big")
        if proto == 17 and udp_port in (sport, dport):
            out["udp up" if dport == udp_port else "udp down"].append(len(body) - 8)
        elif proto == 6 and tcp_port in (sport, dport) and len(body) > (body[12] >> 4) * 4:
            out["tcp up" if dport == tcp_port else "tcp down"].append(len(body) - (body[12] >> 4) * 4)
    sock.close()


def nts_bytes(tmp: str, cert: str, key: str) -> Optional[Dict[str, List[int]]]:
    """chronyd server and client with NTS on loopback (chrony 4.3), sniffed for 6 s: NTS-KE over
    TCP once, then NTP+NTS datagrams at minpoll -2. None without root or chronyd."""
    chronyd = shutil.which("chronyd") or shutil.which("chronyd", path="/usr/sbin:/sbin")
    if chronyd is None or os.geteuid() != 0:
        return None
    udp_port, ke_port = 11131, 4461
    confs = {
        "nts-server": f"port {udp_port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 10\n"
                      f"cmdport 0\npidfile {tmp}/nts-server.pid\nntsserverkey {key}\nntsservercert {cert}\n"
                      f"ntsport {ke_port}\nntsdumpdir {tmp}\n",
        "nts-client": f"server localhost port {udp_port} nts ntsport {ke_port} minpoll -2 maxpoll -2 iburst\n"
                      f"ntstrustedcerts {cert}\nport 0\ncmdport 0\npidfile {tmp}/nts-client.pid\n",
    }
    for name, text in confs.items():
        with open(os.path.join(tmp, name + ".conf"), "w") as fh:
            fh.write(text)
    found: Dict[str, List[int]] = {"udp up": [], "udp down": [], "tcp up": [], "tcp down": []}
    procs = [subprocess.Popen([chronyd, "-x", "-d", "-u", "root", "-f", os.path.join(tmp, "nts-server.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(1.0)
    sniffer = threading.Thread(target=sniff_loopback, args=(6.0, udp_port, ke_port, found))
    sniffer.start()
    time.sleep(0.3)
    procs.append(subprocess.Popen([chronyd, "-x", "-d", "-u", "root", "-f",
                                   os.path.join(tmp, "nts-client.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    sniffer.join()
    for proc in procs:
        proc.terminate()
        proc.wait(10)
    return found if found["udp up"] else None


# ------------------------------------------------------------------------------------- worst case
def raw_attack(port: int, conns: int, out_of_order: bool) -> List[socket.socket]:
    """`conns` connections that each park data on all MAX_STREAMS client streams and never finish
    them, driving aioquic's client packet by packet. In order: every stream gets 4 KB that never
    parse as a request (the session holds them), the server's ACKs are read so the congestion
    window lets it all out. `out_of_order`: each stream's first packet is withheld and no ACK is
    read, so the client never learns of the loss: what its first flight carries stays parked in
    aioquic's reassembly buffers."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    socks = []
    server = ("127.0.0.1", port)
    for _ in range(conns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        quic = QuicConnection(configuration=QuicConfiguration(
            is_client=True, alpn_protocols=[ALPN_TSQ], verify_mode=ssl.CERT_NONE))
        quic.connect(server, now=time.monotonic())

        def pump(rounds: int, wait_s: float, quic: QuicConnection = quic, sock: socket.socket = sock) -> None:
            for _ in range(rounds):
                for data, _ in quic.datagrams_to_send(now=time.monotonic()):
                    sock.sendto(data, server)
                sock.settimeout(wait_s)
                try:
                    while True:
                        quic.receive_datagram(sock.recv(65535), server, now=time.monotonic())
                        sock.settimeout(0.005)
                except socket.timeout:
                    pass

        for _ in range(8):
            pump(1, 0.5)
            if quic._handshake_complete:  # benchmark-side peek
                break
        pump(1, 0.02)
        for _ in range(MAX_STREAMS):
            sid = quic.get_next_available_stream_id()
            # Never a whole request (Nonce with a bad length), as much as the stream may hold.
            quic.send_stream_data(sid, b"\x01\x05" + bytes(4000 if not out_of_order else 4095))
            if out_of_order:
                flight = [d for d, _ in quic.datagrams_to_send(now=time.monotonic())]
                for data in flight[1:]:
                    sock.sendto(data, server)
        if not out_of_order:
            pump(6, 0.02)
        socks.append(sock)   # the connection is abandoned here, its data parked on the server
    return socks


# ------------------------------------------------------------------------------------- report
def row(name: str, mode: str, n: int, answered: int, failed: int, wall: float, cpu: float,
        discarded: int = 0) -> None:
    why = f" ({FAILURES[-1]})" if failed and FAILURES else ""
    # An answer whose basic T3 (stamped before the packet left, plus the measured stamp-to-wire
    # minimum) lands after its real departure makes a loopback round trip non-positive: the client
    # discards it (draft §6.6) and the load counts it as answered.
    invalid = f"  {discarded} answers failed the client's §6.6 checks" if discarded else ""
    print(f"{name:<26} {mode:<9} {n:>5} {answered / wall:>9.0f} {cpu / wall * 100:>9.0f}% "
          f"{answered / max(cpu, 1e-9):>11.0f}" + (f"  failed {failed}{why}" if failed else "") + invalid,
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per load cell")
    ap.add_argument("--conns", default="1,10,100,1000")
    ap.add_argument("--handshakes", type=int, default=200)
    ap.add_argument("--idle", type=int, default=500, help="connections for the memory section")
    ap.add_argument("--sections", default="load,handshakes,memory,bytes,workers")
    ap.add_argument("--no-chrony", action="store_true")
    ap.add_argument("--serve-baseline", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1], args.serve_baseline[2])
        return 0
    sections = set(args.sections.split(","))
    logging.getLogger("tsq.client").setLevel(logging.ERROR)   # §6.6 discards: counted per row instead
    conns = [int(x) for x in args.conns.split(",")]
    tmp = tempfile.mkdtemp(prefix="tsq-load-")
    cert, key, pin = write_keys(tmp)
    tsq_cmd = [sys.executable, "-m", "tsq", "server", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key,
               "--rate-per-source", "1e9", "--max-connections-per-source", "100000", "--stats-interval", "0"]
    servers = {
        "tsq server": tsq_cmd,
        "aioquic asyncio baseline": [sys.executable, os.path.abspath(__file__), "--serve-baseline",
                                     "24433", cert, key],
    }
    # The same TSQ server without its DATAGRAM fast path (tsq.quic.fast_exchange), in the load cells.
    generic = {"tsq --no-fast-path": [*tsq_cmd, "--no-fast-path"]}
    print(f"clock backend {clock.BACKEND}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    try:
        if "load" in sections:
            # Both QUIC servers run side by side and are driven in alternation, `--rounds` times per
            # cell: on a shared machine the load changes from second to second, so each cell
            # reports the median of its rounds and the ratio of the two servers' medians.
            print(f"\n{'server':<26} {'mode':<9} {'conns':>5} {'exch/s':>9} {'server CPU':>10} "
                  f"{'exch/CPU-s':>11}   (median of {args.rounds} alternating rounds)")
            running = {name: start(cmd) for name, cmd in {**servers, **generic}.items()}
            try:
                for mode in ("datagram", "stream"):
                    for n in conns:
                        runs: Dict[str, List[Tuple[int, int, float, float, int]]] = {
                            name: [] for name in running}
                        for _ in range(args.rounds):
                            for name, (proc, port) in running.items():
                                result = asyncio.run(drive(port, pin, n, mode, args.seconds, proc.pid))
                                runs[name].append(result)
                        medians = {}
                        for name, results in runs.items():
                            best = sorted(results, key=lambda r: r[0] / max(r[3], 1e-9))[len(results) // 2]
                            medians[name] = best[0] / max(best[3], 1e-9)
                            row(name, mode, n, *best)
                        base = max(medians["aioquic asyncio baseline"], 1e-9)
                        for label, name in (("tsq/aioquic", "tsq server"), ("no-fast-path/aioquic",
                                                                             "tsq --no-fast-path")):
                            print(f"{'  ratio ' + label:<26} {mode:<9} {n:>5} {'':>9} {'':>10} "
                                  f"{medians[name] / base:>10.2f}x", flush=True)
            finally:
                for proc, _ in running.values():
                    stop(proc)
            chrony = None if args.no_chrony else chronyd_server(tmp)
            if chrony is None:
                print("chronyd                    skipped (--no-chrony, or no chronyd or C compiler)")
            else:
                cproc, cport, loadgen = chrony
                try:
                    for n in conns:
                        result = drive_ntp(loadgen, cport, n, args.seconds, cproc.pid)
                        row("chronyd (NTP)", "udp", n, *result)
                finally:
                    stop(cproc)
        if "handshakes" in sections:
            print(f"\n{'server':<26} {'handshakes':>10} {'per s':>8} {'server CPU':>10} {'per CPU-s':>10}")
            for name, cmd in servers.items():
                proc, port = start(cmd)
                try:
                    done, wall, cpu = asyncio.run(handshakes(port, pin, args.handshakes, proc.pid))
                    print(f"{name:<26} {done:>10} {done / wall:>8.0f} {cpu / wall * 100:>9.0f}% "
                          f"{done / max(cpu, 1e-9):>10.0f}", flush=True)
                finally:
                    stop(proc)
        if "memory" in sections:
            print(f"\n{'server':<26} {'case':<38} {'conns':>5} {'RSS before':>10} {'after':>8} "
                  f"{'per conn':>9}")
            cases = [(name, "idle") for name in servers] + [("tsq server", "in order"),
                                                            ("tsq server", "out of order")]
            for name, case in cases:
                proc, port = start(servers[name])   # a fresh process per case: no reused free lists
                try:
                    time.sleep(0.5)
                    before = rss_kb(proc.pid)
                    n = args.idle if case == "idle" else max(1, args.idle // 5)
                    socks: List[socket.socket] = []
                    loop = asyncio.new_event_loop()
                    clients: List[TsqClient] = []
                    if case == "idle":
                        async def idle(n: int, port: int = port) -> List[TsqClient]:
                            clients = await open_clients(port, pin, n)
                            await asyncio.gather(*(c.exchange() for c in clients), return_exceptions=True)
                            return clients

                        clients = loop.run_until_complete(idle(n))
                        label = "idle, after one exchange"
                    else:
                        socks = raw_attack(port, n, case == "out of order")
                        label = f"worst: {MAX_STREAMS} streams x 4 KB, {case}"
                    time.sleep(1.0)
                    after = rss_kb(proc.pid)
                    print(f"{name:<26} {label:<38} {n:>5} {before:>8} kB {after:>5} kB "
                          f"{(after - before) * 1024 / n / 1000:>6.1f} kB", flush=True)

                    async def close_all(clients: List[TsqClient] = clients) -> None:
                        await asyncio.gather(*(c.close() for c in clients))

                    loop.run_until_complete(close_all())
                    loop.close()
                    for sock in socks:
                        sock.close()
                finally:
                    stop(proc)
        if "bytes" in sections:
            print(f"\nUDP payload bytes (datagrams) per direction; NTP: {NTP_PAYLOAD} B each way per "
                  "exchange")
            print(f"{'server':<26} {'mode':<9} {'phase':<22} {'client->server':>16} {'server->client':>16}")
            per_exchange: Dict[Tuple[str, str], Tuple[float, float, int]] = {}
            for name, cmd in servers.items():
                proc, port = start(cmd)
                try:
                    for mode in ("datagram", "stream"):
                        got = asyncio.run(bytes_per_exchange(port, pin, mode))
                        k = got["count"][0]
                        for phase in ("handshake", "first", "close"):
                            up_n, up_b, dn_n, dn_b = got[phase]
                            retry = " (+Retry)" if name == "tsq server" else ""
                            label = {"handshake": "handshake" + retry, "first": "first exchange+warm-up",
                                     "close": "close"}[phase]
                            print(f"{name:<26} {mode:<9} {label:<22} {up_b:>9} B ({up_n:>2}) "
                                  f"{dn_b:>9} B ({dn_n:>2})")
                        up_n, up_b, dn_n, dn_b = got["steady"]
                        print(f"{name:<26} {mode:<9} {'per steady exchange':<22} {up_b / k:>9.1f} B "
                              f"({up_n / k:.1f}) {dn_b / k:>9.1f} B ({dn_n / k:.1f})", flush=True)
                        hs = got["handshake"][1] + got["handshake"][3] + got["first"][1] + got["first"][3]
                        per_exchange[(name, mode)] = (up_b / k, dn_b / k, hs)
                finally:
                    stop(proc)
            nts = nts_bytes(tmp, cert, key)
            if nts is None:
                print("chrony NTS                 skipped (needs root and chronyd)")
            else:
                up, down = nts["udp up"], nts["udp down"]
                print(f"{'chrony NTS (4.3)':<26} {'udp':<9} {'NTS-KE (TCP, once)':<22} "
                      f"{sum(nts['tcp up']):>9} B      {sum(nts['tcp down']):>9} B")
                print(f"{'chrony NTS (4.3)':<26} {'udp':<9} {'per exchange':<22} {sum(up) / len(up):>9.1f} B "
                      f"(1.0) {sum(down) / max(1, len(down)):>9.1f} B (1.0)")
                per_exchange[("chrony NTS", "")] = (sum(up) / len(up), sum(down) / max(1, len(down)),
                                                     sum(nts["tcp up"]) + sum(nts["tcp down"]))
            print(f"\nbytes per day (both directions), one connection polling every 2^p s; idle timeout "
                  f"{IDLE_TIMEOUT_S:g} s: slower polls pay a handshake + warm-up each time")
            heads = " ".join(f"{(n.split()[0] + ' ' + m) if m else n:>18}" for n, m in per_exchange)
            print(f"{'poll':>6} {'NTP':>10} {heads}")
            for p in range(4, 11):
                interval = 2 ** p
                polls = 86400 / interval
                cells = []
                for (name, _mode), (up, down, hs) in per_exchange.items():
                    reconnect = interval > IDLE_TIMEOUT_S and name != "chrony NTS"  # NTS-KE once only
                    cells.append(f"{polls * (up + down) + (polls if reconnect else 1) * hs:>15.0f} B")
                ntp = polls * 2 * NTP_PAYLOAD
                print(f"{'2^' + str(p):>6} {ntp:>8.0f} B " + " ".join(f"{c:>18}" for c in cells))
        if "workers" in sections:
            n = max(conns)
            print(f"\n{'tsq server':<26} {'mode':<9} {'conns':>5} {'exch/s':>9} {'server CPU':>10} "
                  f"{'exch/CPU-s':>11}")
            for workers in (1, 2):
                proc, port = start([*tsq_cmd, "--workers", str(workers)])
                try:
                    time.sleep(0.5)
                    result = asyncio.run(drive(port, pin, n, "datagram", args.seconds, proc.pid))
                    row(f"--workers {workers}", "datagram", n, *result)
                finally:
                    stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
