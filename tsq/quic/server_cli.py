"""`tsq server`: serve TSQ over QUIC (streams and datagrams on one port)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from tsq import wire
from tsq.auth import KeyFileError, load_signer
from tsq.quic.client import parse_server
from tsq.quic.identity import default_state_dir, load_or_create
from tsq.quic.server import DEFAULT_IDLE_TIMEOUT_S, ServedClock, ServerConfig, TsqServer, load_pem_pair
from tsq.quic.trust import generate_self_signed, spki_pin_pem

SOURCE_TYPES = {"gps": 1, "ptp": 2, "ntp": 3, "manual": 4, "unknown": 5}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "server", help="serve TSQ over QUIC",
        description="Serve TSQ (draft-mccollum-ntp-tsq-01) over QUIC: stream and datagram mode on "
        "one UDP port, kernel RX stamps for T2, T3 stamped into the packet as it is encrypted.",
    )
    p.add_argument("--listen", default="[::]:443", metavar="HOST:PORT", help="address (default [::]:443)")
    p.add_argument("--cert", help="certificate chain (PEM); without it the server's own self-signed "
                   "identity, made once in --state-dir and reused (a stable pin)")
    p.add_argument("--key", help="private key (PEM) of --cert")
    p.add_argument("--name", action="append", default=[],
                   help="DNS name / IP for the self-signed certificate (repeatable; default localhost)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the self-signed identity lives (default $STATE_DIRECTORY, /var/lib/tsq or "
                        "~/.local/state/tsq)")
    p.add_argument("--ephemeral", action="store_true",
                   help="a throw-away self-signed certificate instead (its pin changes at every start)")
    p.add_argument("--clock", default="realtime",
                   help="time source: realtime, tai, phc:/dev/ptpN, or monotonic (not UTC: a steady "
                        "stand-in for tests on a host whose wall clock is stepped; add --clock-offset)")
    p.add_argument("--clock-offset", type=float, default=0.0, metavar="SECONDS",
                   help="calibration added to all served time (like chrony's offset)")
    p.add_argument("--sign-key", metavar="FILE",
                   help="signing key: PEM Ed25519 private key or a file 'hmac:<hex>'")
    p.add_argument("--key-id", type=int, default=1, help="key id in Signature Blocks (default 1)")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="Metadata TLV pair sent to clients that ask (repeatable)")
    p.add_argument("--stratum", type=int, help="Time Source Info: stratum (enables the TLV)")
    p.add_argument("--source-type", choices=sorted(SOURCE_TYPES), default="unknown")
    p.add_argument("--source-info", default="", help="Time Source Info: free text")
    p.add_argument("--clock-class", type=int, help="Clock Quality: class 0-5 (enables the TLV)")
    p.add_argument("--clock-error-us", type=int, default=0, help="Clock Quality: estimated error, µs")
    p.add_argument("--clock-drift-ppb", type=int, default=0, help="Clock Quality: drift, ppb")
    p.add_argument("--clock-tag", default="", help="Clock Quality: source class tag")
    p.add_argument("--no-precision", action="store_true", help="do not acknowledge Precision Mode")
    p.add_argument("--no-datagrams", action="store_true", help="do not enable QUIC DATAGRAM frames")
    p.add_argument("--legacy-alpn", action="store_true",
                   help="also accept ALPN 'tsq/1' (the implementation deployed in the wild: streams, "
                        "TLVs 1-3 only); draft §7 wants exactly 'tsq', so this is off by default")
    p.add_argument("--max-connections", type=int, default=10_000)
    p.add_argument("--max-connections-per-source", type=int, default=32)
    p.add_argument("--rate-per-source", type=float, default=200.0, metavar="REQ_PER_S")
    p.add_argument("--stats-interval", type=float, default=60.0, metavar="SECONDS",
                   help="statistics line every SECONDS (0: never)")
    p.add_argument("--log-addresses", action="store_true", help="include client addresses in logs")
    p.add_argument("--user-stamps", action="store_true",
                   help="stamp in user space, not with kernel timestamps (for comparison only)")
    p.add_argument("--no-compensate", action="store_true",
                   help="do not add the measured stamp-to-wire delay to T3")
    p.add_argument("--no-fast-path", action="store_true",
                   help="answer DATAGRAM requests through aioquic's generic packet path only (the fast "
                        "path's A/B comparison; see docs/quic.md)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, metavar="SECONDS",
                   help="forget a connection silent this long (default %(default)g: two polls at "
                        "maxpoll 6)")
    p.add_argument("--uvloop", action="store_true",
                   help="run on uvloop where installed; needs --user-stamps (uvloop stops watching a "
                        "socket once its error queue signals, which every kernel TX stamp does)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run)


def _metadata(items: List[str]) -> Tuple[Tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--metadata {item!r}: expected KEY=VALUE")
        out.append((key, value))
    return tuple(sorted(out))


def build_config(args: argparse.Namespace) -> ServerConfig:
    """ServerConfig from parsed arguments; ValueError/OSError/KeyFileError on bad input."""
    host, port = parse_server(args.listen, 443)
    ServedClock(args.clock).close()  # fail early on an unknown clock or a missing PHC
    if args.key and not args.cert:
        raise ValueError("--key needs --cert")
    names = args.name or ["localhost", "127.0.0.1", "::1"]
    if args.cert:
        cert_pem, key_pem = load_pem_pair(args.cert, args.key or args.cert)  # or one combined PEM
        print(f"certificate {args.cert}; pin {spki_pin_pem(cert_pem)}", flush=True)
    elif args.ephemeral:
        cert_pem, key_pem = generate_self_signed(names)
        print(f"ephemeral self-signed certificate for {', '.join(names)}; pin {spki_pin_pem(cert_pem)}",
              flush=True)
    else:
        state = Path(args.state_dir) if args.state_dir else default_state_dir()
        cert_pem, key_pem, pin, created = load_or_create(state, names)
        how = "created" if created else "reused"
        print(f"self-signed identity {state / 'cert.pem'} ({how}); pin {pin}", flush=True)
    signer = load_signer(args.sign_key, args.key_id) if args.sign_key else None
    time_source = None
    if args.stratum is not None:
        time_source = wire.TimeSourceInfo(args.stratum, SOURCE_TYPES[args.source_type], args.source_info)
    quality = None
    if args.clock_class is not None:
        quality = wire.ClockQuality(args.clock_class, args.clock_error_us, args.clock_drift_ppb,
                                    args.clock_tag)
    config = ServerConfig(
        cert_pem=cert_pem, key_pem=key_pem, host=host, port=port, clock=args.clock,
        clock_offset_ns=round(args.clock_offset * 1e9), datagrams=not args.no_datagrams,
        legacy_alpn=args.legacy_alpn, signer=signer, metadata=_metadata(args.metadata),
        time_source=time_source, clock_quality=quality, precision=not args.no_precision,
        kernel_stamps=not args.user_stamps, compensate=not args.no_compensate,
        max_connections=args.max_connections,
        max_connections_per_source=args.max_connections_per_source,
        rate_per_source=args.rate_per_source, rate_burst=max(1.0, 2 * args.rate_per_source),
        stats_interval_s=args.stats_interval, log_addresses=args.log_addresses,
        reuse_port=args.workers > 1, idle_timeout_s=args.idle_timeout, fast_path=not args.no_fast_path,
        # One secret for all workers: a Retry from one is accepted by every other.
        retry_secret=os.urandom(32),
    )
    try:
        config.policy().check()   # an option no response can carry is the operator's error, now
    except wire.WireError as exc:
        raise ValueError(f"server options cannot be sent to clients: {exc}") from None
    return config


async def serve(config: ServerConfig, ready: Optional[str] = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    server = TsqServer(config)
    await server.start()
    stop = asyncio.get_running_loop().create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal)
    host, port = server.address[0], server.address[1]
    modes = "datagram+stream" if config.datagrams else "stream"
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"{ready or 'tsq server'} listening on {host}:{port} ({modes}, clock {config.clock}, "
          f"{'kernel' if config.kernel_stamps else 'user-space'} stamps, {loop} loop)", flush=True)
    try:
        await stop
    finally:
        server.close()


def use_uvloop(wanted: bool = True) -> str:
    """Install uvloop's event loop policy when wanted and installed; the loop's name. (Only with
    user-space stamps: libuv stops polling a descriptor after EPOLLERR, which the error queue of a
    TX-timestamping socket raises on every send.)"""
    if wanted:
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"


def _worker(config: ServerConfig, index: int, uvloop: bool) -> None:
    use_uvloop(uvloop)
    asyncio.run(serve(config, ready=f"tsq server worker {index}"))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # aioquic warns once per connection it closes for a protocol error: a client can open those as
    # fast as it can handshake, so they are counted (`closed_by_error` in the stats line) instead.
    logging.getLogger("quic").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        if args.uvloop and not args.user_stamps:
            raise ValueError("--uvloop needs --user-stamps: uvloop stops reading a socket whose error "
                             "queue signals, and kernel TX stamps arrive there")
        config = build_config(args)
    except (ValueError, OSError, KeyFileError) as exc:
        print(f"tsq server: {exc}", file=sys.stderr)
        return 2
    try:
        if args.workers <= 1:
            use_uvloop(args.uvloop)
            asyncio.run(serve(config))
            return 0
        fork = multiprocessing.get_context("fork")
        procs = [fork.Process(target=_worker, args=(config, i, args.uvloop))
                 for i in range(args.workers)]
        for proc in procs:
            proc.start()

        def stop_workers(signum: int, _frame: object) -> None:
            for proc in procs:
                if proc.pid is not None and proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop_workers)
        signal.signal(signal.SIGINT, stop_workers)
        for proc in procs:
            proc.join()
        return 0
    except OSError as exc:
        print(f"tsq server: cannot serve on {args.listen}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
