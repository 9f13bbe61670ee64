"""`tsq demo`: the whole chain on one machine, live.

A local TSQ server (127.0.0.1, ephemeral port, throw-away certificate), the sync engine against it,
the serial bridge, and simulated devices running the real firmware core (firmware-bridge/, built
now with the system C compiler) over ptys. Once a second it shows, for the gateway and for every
device, what the clock believes (state and error bound) and how wrong it really is (the gateway
against the system clock, which the server serves; each device from its truth log, its own UTC
against CLOCK_REALTIME). Ctrl-C ends it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from typing import Any, Optional, TextIO

from tsq.bridge.service import Bridge, BridgeConfig
from tsq.clock import raw_ns
from tsq.demo.firmware import FirmwareError, SimulatedDevice, build_host_firmware
from tsq.demo.pki import make_pki
from tsq.demo.standin import StandInDevice
from tsq.fieldlog_files import TRUTH_STATES, truth_line
from tsq.gateway.runner import SyncRunner
from tsq.gateway.settings import SyncConfig
from tsq.gateway.systemmodel import SystemClockModel
from tsq.quic.server import ServerConfig, TsqServer
from tsq.tasks import cancel_and_wait

DEVICE_SKEWS_PPM = (50.0, -20.0, 10.0, -35.0, 25.0, -5.0)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run server, engine, bridge and simulated devices on this machine",
                       description=__doc__)
    _configure(p)
    p.set_defaults(func=run)


def default_args() -> argparse.Namespace:
    """The demo's options at their defaults (for `python -m tsq.bridge` with no arguments)."""
    p = argparse.ArgumentParser()
    _configure(p)
    return p.parse_args([])


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=2, help="simulated devices (default 2)")
    p.add_argument("--duration", type=float, default=0.0, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--log", metavar="DIR", help="write the field logs here")
    p.add_argument("--source", choices=["engine", "system"], default="engine",
                   help="time for the bridge: the sync engine against the local server (default), "
                        "or the system clock directly")
    p.add_argument("--ping-interval", type=float, default=0.25, metavar="S",
                   help="seconds between pings to each device (default 0.25)")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 0


def _fmt_ns(v: Optional[int]) -> str:
    if v is None:
        return "-"
    if abs(v) >= 10_000_000:
        return f"{v / 1e6:.1f} ms"
    if abs(v) >= 10_000:
        return f"{v / 1e3:.1f} µs"
    return f"{v} ns"


async def _start_server(tmp: str) -> tuple[Any, str]:
    """A TSQ server on 127.0.0.1 with a throw-away certificate; returns (server, pin)."""
    pki = make_pki(tmp)
    with open(pki.server_cert, "rb") as c, open(pki.server_key, "rb") as k:
        cert, key = c.read(), k.read()
    server = TsqServer(ServerConfig(cert_pem=cert, key_pem=key, host="127.0.0.1", port=0))
    await server.start()
    return server, pki.server_pin


def _start_devices(n: int, tmp: str, truth_dir: Optional[str] = None) -> list[Any]:
    """Simulated devices on ptys: the real firmware core (host build, compiled now with the system C
    compiler); where it cannot be built, Python stand-ins speaking the same protocol, said once."""
    devices: list[Any] = []
    try:
        binary = build_host_firmware()
    except FirmwareError as exc:
        print(f"tsq demo: {exc}\ntsq demo: using Python stand-in devices instead", file=sys.stderr)
        for i in range(n):
            dev = StandInDevice.on_new_pty(0xD0000001 + i, DEVICE_SKEWS_PPM[i % len(DEVICE_SKEWS_PPM)])
            dev.start()
            devices.append(dev)
        return devices
    for i in range(n):
        devices.append(SimulatedDevice(tmp, device_id=0xD0000001 + i, binary=binary, truth_dir=truth_dir,
                                       drift_ppm=DEVICE_SKEWS_PPM[i % len(DEVICE_SKEWS_PPM)],
                                       offset_ms=3.0 * (i + 1)))
    return devices


async def _demo(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="tsq-demo-")
    tmp = tmp_ctx.name
    tasks: list[asyncio.Task[Any]] = []
    server: Any = None
    devices: list[Any] = []
    truth: Optional[TextIO] = None
    try:
        model: Any
        source_note: str
        runner: Any = None
        if args.source == "engine":
            server, pin = await _start_server(tmp)
            runner = SyncRunner(SyncConfig(servers=[f"127.0.0.1:{server.port}"], pin=pin,
                                           log_dir=args.log, control_path=f"{tmp}/control.sock"))
            model = runner.model
            source_note = f"sync engine <- TSQ server 127.0.0.1:{server.port}"
        else:
            # The system clock is the demo's reference by construction: vouch for it to 1 µs.
            model = SystemClockModel(assume_bound_ns=1000)
            source_note = "system clock (as reference)"
        if args.log:
            os.makedirs(args.log, exist_ok=True)
            # closed in the finally below: it lives as long as the demo
            truth = open(os.path.join(args.log, "truth-gateway.log"), "a", encoding="ascii")  # noqa: SIM115
        try:
            devices = _start_devices(args.devices, tmp, args.log) if args.devices > 0 else []
        except (ImportError, AttributeError, OSError) as exc:
            print(f"tsq demo: no simulated devices ({exc})", file=sys.stderr)
            devices = []
        bridge = Bridge(BridgeConfig(ports=[d.path for d in devices], log_dir=args.log,
                                     ping_interval_s=args.ping_interval, backoff_initial_s=0.05,
                                     backoff_max_s=1.0), model)
        if runner is not None:
            runner.set_device_source(bridge.status)
            tasks.append(asyncio.create_task(runner.run()))
        tasks.append(asyncio.create_task(bridge.run()))
        print(f"tsq demo: time source: {source_note}; {len(devices)} device(s); Ctrl-C to stop", flush=True)
        t_end = None if args.duration <= 0 else loop.time() + args.duration
        while not stop.is_set():
            if t_end is not None and loop.time() >= t_end:
                break
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    print(f"tsq demo: {t.exception()!r}", file=sys.stderr)
                    return 1
            _print_table(model, bridge, devices, truth)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return 0
    finally:
        await cancel_and_wait(tasks)
        for d in devices:
            with contextlib.suppress(Exception):
                d.close()
        if server is not None:
            server.close()
        if truth is not None:
            truth.close()
        tmp_ctx.cleanup()


# the truth log's state codes, by the model's state names (0 for any other: unsynchronised)
_TRUTH_CODE = {name: code for code, name in TRUTH_STATES.items()}


def _print_table(model: Any, bridge: Bridge, devices: list[Any], truth: Optional[TextIO] = None) -> None:
    before = time.time_ns()
    raw = raw_ns()
    after = time.time_ns()
    utc = model.utc_ns(raw)
    # The server serves this machine's system clock: that is the truth the gateway is judged by.
    realtime = (before + after) // 2
    true_err = None if utc is None else utc - realtime
    if truth is not None:  # truth-gateway.log beside the field logs, which `tsq report` reads
        bound = model.error_bound_ns(raw)
        truth.write(truth_line(realtime, utc if bound is not None else None, bound,
                               _TRUTH_CODE.get(model.state(raw), 0)))
        truth.flush()
    stamp = time.strftime("%H:%M:%S")
    lines = [f"{stamp} {'clock':<14} {'state':<15} {'bound':>10} {'true error':>11} {'line delay':>11}",
             f"{'':8} {'gateway':<14} {model.state(raw):<15} {_fmt_ns(model.error_bound_ns(raw)):>10} "
             f"{_fmt_ns(true_err):>11} {'-':>11}"]
    for i, st in enumerate(bridge.status()):
        dev_err = None
        if i < len(devices):
            with contextlib.suppress(Exception):
                dev_err = devices[i].true_error_ns()
        name = st.device or st.port.rsplit("/", 1)[-1]
        lines.append(f"{'':8} {name:<14} {st.state:<15} {_fmt_ns(st.bound_ns):>10} "
                     f"{_fmt_ns(dev_err):>11} {_fmt_ns(st.line_delay_ns):>11}")
    print("\n".join(lines), flush=True)
