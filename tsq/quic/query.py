"""`tsq query`: a burst of TSQ exchanges with each server, printed (text or JSON lines)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from tsq import clock
from tsq.auth import KeyFileError, Verifier, load_verify_key
from tsq.quic.client import TsqClient, TsqError, TsqHandshakeError
from tsq.sync.exchange import Exchange


@dataclass
class QueryResult:
    """What one server answered: accepted samples and the errors met on the way."""

    server: str
    samples: List[Exchange] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    alpn: Optional[str] = None
    metadata: tuple[tuple[str, str], ...] = ()
    discarded: List[str] = field(default_factory=list)   # responses that were not samples (§6.6)
    fallbacks: int = 0                                    # datagrams unanswered: streams used (§6.5)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "query", help="query TSQ servers and print offset and delay",
        description="Open one QUIC connection per server, run a burst of TSQ exchanges (the first "
        "after the handshake is a discarded warm-up) and print each exchange's offset and delay.",
    )
    p.add_argument("servers", nargs="+", metavar="HOST[:PORT]", help="servers (default port 443)")
    p.add_argument("--count", "-n", type=int, default=4, help="exchanges per server (default 4)")
    p.add_argument("--mode", choices=("auto", "datagram", "stream"), default="auto")
    p.add_argument("--json", action="store_true", help="one JSON object per exchange, then a summary")
    p.add_argument("--interval", type=float, default=0.0, metavar="SECONDS", help="between exchanges")
    p.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS", help="per exchange")
    trust = p.add_argument_group("trust (default: system CAs)")
    trust.add_argument("--ca", metavar="FILE", help="trust this CA bundle (PEM) instead")
    trust.add_argument("--pin", metavar="sha256/BASE64", help="accept only this SPKI pin")
    trust.add_argument("--insecure", action="store_true", help="accept any certificate (warns)")
    trust.add_argument("--server-name", help="TLS server name to verify (default: the host)")
    p.add_argument("--verify-key", metavar="FILE", help="require signed responses and verify them with "
                   "this key (PEM Ed25519 public key or 'hmac:<hex>')")
    p.add_argument("--key-id", type=int, default=1, help="key id of --verify-key (default 1)")
    p.add_argument("--require-signature", action="store_true",
                   help="send Signature Request; reject unsigned or unverifiable responses (needs "
                        "--verify-key, which implies it)")
    p.add_argument("--allow-legacy-alpn", action="store_true",
                   help="also speak ALPN tsq/1 (the implementation deployed in the wild: streams, TLVs "
                        "1-3, no signatures); draft §7 wants exactly 'tsq'")
    p.add_argument("--user-stamps", action="store_true", help="user-space stamps (comparison only)")
    p.add_argument("--no-interleave", action="store_true",
                   help="use the basic T3 even when the server reports the precise one")
    p.set_defaults(func=run)


async def query_server(server: str, *, count: int, mode: str = "auto", interval_s: float = 0.0,
                       **client_args: Any) -> QueryResult:
    """Connect to `server`, run `count` samples, close. Never raises TsqError: it is recorded."""
    client = TsqClient(server, **client_args)
    result = QueryResult(server=client.name)
    try:
        for i in range(count):
            if i and interval_s > 0:
                await asyncio.sleep(interval_s)
            try:
                result.samples.append(await client.sample(mode))
            except TsqHandshakeError as exc:
                result.errors.append(str(exc))
                break  # trust or ALPN: trying again cannot help
            except TsqError as exc:
                if str(exc) not in result.errors:
                    result.errors.append(str(exc))
                if not client.connected and not result.samples and i >= 1:
                    break  # unreachable: do not sit out every timeout
        result.alpn = client.alpn_protocol
        if client.last_response is not None:
            result.metadata = client.last_response.metadata
        result.discarded = list(client.discards)
        result.fallbacks = client.fallbacks
    finally:
        await client.close()
    return result


def query(servers: List[str], *, count: int, mode: str = "auto", interval_s: float = 0.0,
          **client_args: Any) -> List[QueryResult]:
    """Blocking helper: query every server concurrently (one connection each)."""

    async def all_servers() -> List[QueryResult]:
        return list(await asyncio.gather(*(
            query_server(s, count=count, mode=mode, interval_s=interval_s, **client_args)
            for s in servers)))

    return asyncio.run(all_servers())


def utc_offset_ns(ex: Exchange, raw_to_unix_ns: int) -> int:
    """The exchange's offset of the server from this host's system clock (ns)."""
    return ex.offset_ns - raw_to_unix_ns


def _raw_to_unix() -> int:
    corr = clock.correlate(clock.CLOCK_REALTIME, clock.CLOCK_MONOTONIC_RAW)
    return corr.ref_ns - corr.sys_ns


def _row(ex: Exchange, raw_to_unix: int) -> Dict[str, Any]:
    return {"server": ex.server, "mode": ex.mode, "offset_ns": utc_offset_ns(ex, raw_to_unix),
            "delay_ns": ex.delay_ns, "kernel_t1": ex.kernel_t1, "kernel_t4": ex.kernel_t4}


def _describe_meta(result: QueryResult) -> str:
    parts = [f"alpn={result.alpn}"] if result.alpn else []
    parts += [f"{k}={v}" for k, v in result.metadata if not k.startswith("xleave")]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR, format="tsq query: %(message)s")
    if args.count < 1:
        print("tsq query: --count must be at least 1", file=sys.stderr)
        return 2
    if args.insecure:
        print("tsq query: WARNING: --insecure: the server's certificate is not checked; anyone on the "
              "path can serve you any time", file=sys.stderr)
    verifier = None
    if args.verify_key:
        try:
            verifier = Verifier({args.key_id: load_verify_key(args.verify_key)})
        except KeyFileError as exc:
            print(f"tsq query: {exc}", file=sys.stderr)
            return 2
    if args.require_signature and verifier is None:
        print("tsq query: --require-signature needs --verify-key", file=sys.stderr)
        return 2
    results = query(
        args.servers, count=args.count, mode=args.mode, interval_s=args.interval,
        ca=args.ca, pin=args.pin, insecure=args.insecure, server_name=args.server_name,
        verifier=verifier, require_signature=verifier is not None,
        allow_legacy_alpn=args.allow_legacy_alpn,
        kernel_stamps=not args.user_stamps, interleaved=not args.no_interleave,
        timeout_s=args.timeout,
    )
    raw_to_unix = _raw_to_unix()
    total = 0
    for result in results:
        total += len(result.samples)
        rows = [_row(ex, raw_to_unix) for ex in result.samples]
        for row in rows:
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{row['server']:<24} {row['mode']:<8} offset {row['offset_ns'] / 1e3:+12.3f} µs"
                      f"  delay {row['delay_ns'] / 1e3:10.3f} µs")
        for err in result.errors:
            print(f"tsq query: {err}", file=sys.stderr)
        if result.discarded:
            print(f"tsq query: {result.server}: {len(result.discarded)} response(s) discarded "
                  f"(draft §6.6), last: {result.discarded[-1]}", file=sys.stderr)
        if result.fallbacks:
            print(f"tsq query: {result.server}: DATAGRAM requests went unanswered; fell back to streams "
                  "(draft §6.5)", file=sys.stderr)
        if rows:
            best = min(rows, key=lambda r: r["delay_ns"])
            summary = {"summary": True, "server": result.server, "samples": len(rows),
                       "offset_ns": best["offset_ns"], "delay_ns": best["delay_ns"],
                       "offset_median_ns": int(statistics.median(r["offset_ns"] for r in rows)),
                       "alpn": result.alpn, "discarded": len(result.discarded),
                       "fell_back_to_streams": bool(result.fallbacks),
                       "metadata": {k: v for k, v in result.metadata if not k.startswith("xleave")}}
            if args.json:
                print(json.dumps(summary))
            else:
                print(f"{result.server:<24} summary  offset {best['offset_ns'] / 1e3:+12.3f} µs  delay "
                      f"{best['delay_ns'] / 1e3:10.3f} µs  (min-delay of {len(rows)}) "
                      f"{_describe_meta(result)}")
        elif not args.json:
            print(f"{result.server:<24} no valid sample", file=sys.stderr)
    if total == 0:
        print("tsq query: no valid sample from any server", file=sys.stderr)
        return 1
    return 0
