"""Prometheus metrics of the daemon's status: a text file (node_exporter's textfile collector) and/or
a tiny HTTP endpoint on 127.0.0.1 (`GET /metrics`).

`render_metrics(status)` is sans-IO: the gateway's typed status (tsq.status) in, exposition
text out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable, List, Mapping, Optional

from tsq.atomicfile import write_atomic
from tsq.status import GatewayStatus

STATES = ("unsynchronised", "synchronised", "holdover")
SELECTIONS = ("selected", "combined", "candidate", "falseticker", "unusable")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


class _Writer:
    def __init__(self) -> None:
        self.lines: List[str] = []
        self._declared: set[str] = set()

    def metric(self, name: str, kind: str, help_text: str, value: Any,
               labels: Optional[Mapping[str, str]] = None, divisor: float = 1.0) -> None:
        num = _number(value)
        if num is None:
            return
        if name not in self._declared:
            self._declared.add(name)
            self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        label = ""
        if labels:
            label = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"
        self.lines.append(f"{name}{label} {num / divisor!r}")


def render_metrics(status: GatewayStatus) -> str:
    """Prometheus text exposition (version 0.0.4) of the gateway's status; absent values are omitted."""
    w = _Writer()
    tr = status.tracking
    for s in STATES:
        w.metric("tsq_state", "gauge", "1 for the current state of the time model", int(tr.state == s),
                 {"state": s})
    w.metric("tsq_system_offset_seconds", "gauge", "system clock minus model UTC",
             tr.system_offset_ns, divisor=1e9)
    w.metric("tsq_error_bound_seconds", "gauge", "bound on the model's error from UTC",
             tr.error_bound_ns, divisor=1e9)
    w.metric("tsq_frequency_ppm", "gauge", "model frequency of UTC relative to the raw clock", tr.freq_ppm)
    w.metric("tsq_last_update_age_seconds", "gauge", "time since the last model update",
             tr.last_update_age_s)
    w.metric("tsq_leap", "gauge", "leap indicator (0 none, 1 insert, 2 delete, 3 unknown)", tr.leap)
    for src in tr.sources:
        lab = {"source": src.name}
        w.metric("tsq_source_offset_seconds", "gauge", "source offset", src.offset_ns, lab, 1e9)
        w.metric("tsq_source_delay_seconds", "gauge", "source round-trip delay", src.delay_ns, lab, 1e9)
        w.metric("tsq_source_jitter_seconds", "gauge", "source jitter", src.jitter_ns, lab, 1e9)
        w.metric("tsq_source_reach", "gauge", "8-bit reachability register", src.reach, lab)
        for sel in SELECTIONS:
            w.metric("tsq_source_selection", "gauge", "1 for the source's selection state",
                     int(src.selection == sel), {**lab, "selection": sel})
    for dev in status.devices or ():
        lab = {"device": dev.device or "", "port": dev.port or ""}
        w.metric("tsq_device_residual_seconds", "gauge", "device clock residual", dev.residual_ns, lab, 1e9)
        w.metric("tsq_device_bound_seconds", "gauge", "device error bound", dev.bound_ns, lab, 1e9)
        w.metric("tsq_device_bad_frames_total", "counter", "bad serial frames", dev.bad_frames, lab)
    return "\n".join(w.lines) + "\n"


def write_metrics_file(path: str, text: str) -> None:
    """Replace `path` atomically (node_exporter's textfile collector must never read half a file)."""
    write_atomic(path, text.encode("utf-8"), 0o644, durable=False)


class MetricsHttpServer:
    """`GET /metrics` on 127.0.0.1:port (loopback only: scrape it through a local exporter/proxy)."""

    def __init__(self, port: int, status: Callable[[], GatewayStatus], host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._status = status
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body = render_metrics(self._status()).encode()
                head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            else:
                body = b"not found\n"
                head = b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, OSError, ValueError):
            pass
        finally:
            writer.close()
