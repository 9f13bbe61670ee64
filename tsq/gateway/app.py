"""The gateway as one process: the engine, the serial bridge and the outputs, from one configuration.

`tsq gateway` runs it from /etc/tsq/tsq.toml (and flags); `tsq sync` is the case without serial
ports, `tsq bridge PORT...` / `python -m tsq.bridge PORT` the case with ports given on the command
line. The devices take their time from the engine (`source = "engine"`, one QUIC connection per
server for everything) or from this host's already disciplined clock (`source = "system"`).

Signals: SIGTERM/SIGINT end it cleanly (logs flushed, drift file written, systemd told STOPPING);
SIGHUP re-reads the configuration file and applies what can change while running — the list of
servers (sources added and removed), the field-log directory — and says in the log what needs a
restart instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from tsq import clock
from tsq.bridge.service import Bridge, BridgeConfig
from tsq.gateway.config import ConfigError, load_config
from tsq.gateway.control import ControlServer, default_control_path
from tsq.gateway.notify import SystemdNotifier
from tsq.gateway.settings import SyncConfig
from tsq.gateway.systemmodel import SystemClockModel
from tsq.status import GatewayStatus, model_tracking
from tsq.sync.model import TimeModel
from tsq.tasks import cancel_and_wait

if TYPE_CHECKING:
    from tsq.gateway.runner import SyncRunner

log = logging.getLogger("tsq.gateway")

# What SIGHUP applies in place; any other change needs a restart (and is said to).
RELOADABLE = frozenset({"servers", "log_dir", "quiet"})


def bridge_config(config: SyncConfig) -> BridgeConfig:
    return BridgeConfig(
        ports=list(config.ports), baud=config.baud, nmea=config.nmea, nmea_position=config.nmea_position,
        ping_interval_s=config.ping_interval_s, warmup_ping=not config.single_ping,
        reply_spin_ms=config.reply_spin_ms, read_probe=config.read_probe,
        log_dir=config.log_dir, fsync_interval_s=config.fsync_interval_s, link=config.link or "auto",
        source=f"the engine ({len(config.servers)} server(s))" if config.servers else "this host's clock")


def validate(config: SyncConfig) -> None:
    """ValueError (one line) for a configuration that cannot run."""
    if not config.servers and not config.ports:
        raise ValueError("nothing to do: give --server HOST[:PORT] (or `servers`) and/or serial ports")
    if config.source == "engine" and not config.servers:
        raise ValueError("the devices' time source is the engine, which needs --server HOST[:PORT]; "
                         "or use --source system (this host's already disciplined clock)")
    if config.source == "system" and config.servers:
        raise ValueError("--source system and --server are exclusive (the engine would not be used)")


class Gateway:
    """Everything one gateway process runs; `await run()` until cancelled."""

    def __init__(self, config: SyncConfig, config_path: Optional[str] = None,
                 overrides: Optional[Dict[str, Any]] = None) -> None:
        validate(config)
        self.config = config
        self.config_path = config_path
        self.overrides = dict(overrides or {})        # flags given: they keep winning on reload
        self.runner: Optional[SyncRunner] = None
        if config.servers:
            # QUIC (aioquic, cryptography: ~18 MB of RSS) only with servers: a bridge fed by the
            # host's clock stays as small as it was on a Pi
            from tsq.gateway.runner import SyncRunner

            self.runner = SyncRunner(config)
        self.model: TimeModel = (self.runner.model if self.runner is not None
                                 else SystemClockModel(assume_bound_ns=config.assume_bound_ns))
        self.bridge: Optional[Bridge] = Bridge(bridge_config(config), self.model) if config.ports else None
        if self.runner is not None and self.bridge is not None:
            self.runner.set_device_source(self.bridge.status)
        self.control_path = (self.runner.control_path if self.runner is not None
                             else config.control_path or default_control_path())
        self.notifier = self.runner.notifier if self.runner is not None else SystemdNotifier()

    def status(self) -> GatewayStatus:
        """The typed status (tsq.status); the engine's, or this host's clock's with the devices."""
        if self.runner is not None:
            return self.runner.status()
        c = clock.raw_realtime()
        return GatewayStatus(
            tracking=model_tracking(self.model, c.ref_ns, c.sys_ns, "time from this host's clock"),
            devices=None if self.bridge is None else tuple(self.bridge.status()))

    def status_json(self) -> Dict[str, Any]:
        """The control socket's status object (docs/internals.md)."""
        return self.status().to_json()

    async def run(self) -> None:
        tasks: List[asyncio.Task[Any]] = []
        if self.runner is not None:
            tasks.append(asyncio.create_task(self.runner.run(), name="tsq-engine"))
        else:
            control = ControlServer(self.control_path, self.status_json)
            tasks.append(asyncio.create_task(control.serve_forever(), name="tsq-control"))
            # The host's clock is the time source: there is nothing to wait for.
            self.notifier.ready(f"serving this host's clock to {len(self.config.ports)} port(s)")
        if self.bridge is not None:
            tasks.append(asyncio.create_task(self.bridge.run(), name="tsq-bridge"))
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_and_wait(tasks)
            if self.runner is None:
                self.notifier.stopping()

    def reload(self) -> List[str]:
        """Re-read the configuration file (SIGHUP); apply what can change in place. Returns what
        happened, one line each (what changed, what needs a restart, or why nothing was done)."""
        if self.config_path is None:
            return ["reload: no configuration file (settings came from flags only)"]
        try:
            values = load_config(self.config_path)
        except ConfigError as exc:
            return [f"reload refused, still running the previous configuration: {exc}"]
        values.update(self.overrides)
        try:
            new = SyncConfig(**values)
            validate(new)
        except (TypeError, ValueError) as exc:
            return [f"reload refused, still running the previous configuration: {exc}"]
        changed = [f.name for f in fields(SyncConfig) if getattr(new, f.name) != getattr(self.config, f.name)]
        if not changed:
            return ["reload: nothing changed"]
        lines = []
        later = [n for n in changed if n not in RELOADABLE]
        if later:
            lines.append(f"reload: needs a restart to change: {', '.join(later)}")
        applied = [n for n in changed if n in RELOADABLE]
        if applied and self.runner is not None:
            lines += self.runner.reconfigure(replace(self.config, **{n: getattr(new, n) for n in applied}))
            self.config = self.runner.config
        elif applied:
            lines.append(f"reload: {', '.join(applied)} apply to the engine, which this gateway does not run")
        return lines


async def serve(gateway: Gateway, on_stop: Optional[Callable[[str], None]] = None) -> int:
    """Run `gateway` until SIGINT/SIGTERM (exit 0); SIGHUP reloads. A failure inside is exit 1."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(gateway.run())
    stopping: List[str] = []

    def stop(signame: str) -> None:
        stopping.append(signame)
        task.cancel()

    def hup() -> None:
        gateway.notifier.reloading()
        for line in gateway.reload():
            log.info("%s", line)
        gateway.notifier.reloaded("reloaded")

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop, sig.name)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, hup)
    cfg = gateway.config
    log.info("%d server(s), %d serial port(s), devices' time from %s, control socket %s",
             len(cfg.servers), len(cfg.ports), "the engine" if cfg.servers else "this host's clock",
             gateway.control_path)
    if gateway.runner is not None and gateway.runner.drift_note:
        log.info("%s", gateway.runner.drift_note)
    try:
        await task
    except asyncio.CancelledError:
        if not stopping:
            raise
    log.info("stopped (%s)", stopping[0] if stopping else "done")
    return 0
