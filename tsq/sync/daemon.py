"""`tsq sync`: the daemon around the sync engine, and the SyncRunner the bridge and `tsq demo` embed.

One persistent TsqClient per server, each polled when the engine says (`next_poll`); every exchange
goes to the engine, every accepted sample and every model update to the field log; after each model
update the outputs run (system clock discipline, chrony SOCK refclock) and a status line is printed.
The control socket answers `tsq status`. SIGTERM/SIGINT end the daemon cleanly (logs flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional

from tsq import clock
from tsq.sync.config import ConfigError, load_config
from tsq.sync.control import ControlError, ControlServer, default_control_path
from tsq.sync.engine import Engine, ModelUpdate, SampleOutcome
from tsq.sync.status import summary_line
from tsq.tasks import cancel_and_wait
from tsq.timefmt import utc_iso

log = logging.getLogger("tsq.sync")

NS_PER_S = 1_000_000_000
OUTPUT_TICK_S = 1.0          # metrics file, holdover checks
REFCLOCK_INTERVAL_S = 0.25   # chronyd's SOCK refclock takes the median of the samples of each poll:
                             # several per second keep even `poll 0` fed
BACKOFF_INITIAL_S = 1.0


@dataclass
class SyncConfig:
    """Everything `tsq sync` can be told (CLI flags or the TOML file; see examples/tsq-sync.toml)."""

    servers: List[str] = field(default_factory=list)   # "HOST[:PORT]"
    ca: Optional[str] = None
    pin: Optional[str] = None
    insecure: bool = False
    mode: str = "auto"
    minpoll: int = 0                   # log2 seconds
    maxpoll: int = 6
    log_dir: Optional[str] = None
    fsync_interval_s: float = 5.0
    control_path: Optional[str] = None
    # outputs, all off by default
    adjust_system: bool = False
    makestep: float = 1.0            # step when |offset| > this ...
    makestep_limit: int = 3            # ... in the first N clock updates (then only slew)
    panic: float = 1000.0            # never touch the clock for |offset| > this (0: no limit)
    dry_run: bool = False              # --adjust-system only says what it would do
    refclock_sock: Optional[str] = None
    refclock_time_bits: str = "auto"
    metrics_file: Optional[str] = None
    metrics_port: Optional[int] = None
    # client
    # Two exchanges back to back per poll, the second sampled: its request leaves on the kernel's warm
    # send path like the server's answer, which removes a ~1 µs one-sided bias (docs/benchmarks.md).
    paired: bool = True
    timeout_s: float = 1.0
    connect_timeout_s: float = 3.0
    backoff_max_s: float = 64.0
    quiet: bool = False


def _instant() -> tuple[int, int]:
    """(raw ns, realtime ns) read as close together as possible (narrowest of 3 brackets)."""
    c = clock.correlate(clock.CLOCK_MONOTONIC_RAW, clock.CLOCK_REALTIME, tries=3)
    return c.ref_ns, c.sys_ns


STATUS_KEYS = ("version", "state", "time_utc", "leap", "system_offset_ns", "freq_ppm", "freq_error_ppm",
               "error_bound_ns", "last_update_utc", "last_update_age_s", "poll_s", "sources")


class SyncRunner:
    """The engine, its clients, logs, outputs and control socket, on the running asyncio loop."""

    def __init__(self, config: SyncConfig) -> None:
        if not config.servers:
            raise ValueError("no TSQ server given")
        self.sysclock: Any = None
        if config.adjust_system:
            from tsq.outputs.sysclock import SystemClockAdjuster

            # Raises SysclockError without CAP_SYS_TIME (unless dry-run): refuse before starting.
            self.sysclock = SystemClockAdjuster(
                makestep=config.makestep, makestep_limit=config.makestep_limit,
                panic=config.panic, dry_run=config.dry_run)
        self.config = config
        self.engine = Engine(minpoll=config.minpoll, maxpoll=config.maxpoll)
        self.model = self.engine.model
        self._providers: Dict[str, Callable[[], List[Dict[str, Any]]]] = {}
        self._clients: Dict[str, Any] = {}
        self._sample_log: Any = None
        self._model_log: Any = None
        self._last_update_raw: Optional[int] = None
        self._last_update_real: Optional[int] = None
        self.updates = 0
        self.control_path = config.control_path or default_control_path()
        self.refclock: Any = None
        if config.refclock_sock:
            from tsq.outputs.refclock import RefclockOutput

            self.refclock = RefclockOutput(config.refclock_sock, config.refclock_time_bits)
        from tsq.quic.client import TsqClient

        for server in config.servers:
            client = TsqClient(server, ca=config.ca, pin=config.pin, insecure=config.insecure,
                               paired=config.paired, timeout_s=config.timeout_s,
                               connect_timeout_s=config.connect_timeout_s)
            if client.name in self._clients:
                raise ValueError(f"server {client.name} given twice")
            self._clients[client.name] = client
            self.engine.add_source(client.name)

    # ------------------------------------------------------------------------------------ status
    def add_status_provider(self, key: str, fn: Callable[[], List[Dict[str, Any]]]) -> None:
        """Merge `fn()` into the status JSON under `key` (the bridge registers "devices")."""
        self._providers[key] = fn

    def _core_status(self, raw: int, real: int) -> Dict[str, Any]:
        """The engine's status at one instant, with the contract's keys all present."""
        st: Dict[str, Any] = dict(self.engine.status(raw, real))
        st["version"] = 1
        for key in STATUS_KEYS:
            st.setdefault(key, None)
        if st["sources"] is None:
            st["sources"] = []
        utc = self.model.utc_ns(raw)
        if st["time_utc"] is None and utc is not None:
            st["time_utc"] = utc_iso(utc)
        if st["system_offset_ns"] is None and utc is not None:
            st["system_offset_ns"] = real - utc
        if st["error_bound_ns"] is None:
            st["error_bound_ns"] = self.model.error_bound_ns(raw)
        if st["state"] is None:
            st["state"] = self.model.state(raw)
        if st["leap"] is None:
            st["leap"] = self.model.leap()
        if self._last_update_raw is not None:
            st["last_update_utc"] = st["last_update_utc"] or utc_iso(self._last_update_real)
            if st["last_update_age_s"] is None:
                st["last_update_age_s"] = round((raw - self._last_update_raw) / 1e9, 3)
        return st

    def status(self) -> Dict[str, Any]:
        """The control socket's status object (docs/internals.md), with outputs and providers."""
        st = self._core_status(*_instant())
        outputs: Dict[str, Any] = {}
        if self.refclock is not None:
            outputs["refclock"] = {"path": self.refclock.path, "sent": self.refclock.sent,
                                   "dropped": self.refclock.dropped, "error": self.refclock.last_error}
        if self.sysclock is not None:
            last = self.sysclock.last
            outputs["system_clock"] = {"dry_run": self.sysclock.dry_run, "updates": self.sysclock.updates,
                                       "last_action": None if last is None else last.kind}
        if outputs:
            st["outputs"] = outputs
        for key, fn in self._providers.items():
            try:
                st[key] = fn()
            except Exception as exc:  # a provider's bug shows in the status, not as a dead daemon
                st[key] = []
                st.setdefault("errors", []).append(f"{key}: {exc!r}")
        return st

    # ------------------------------------------------------------------------------------ running
    async def run(self) -> None:
        """Serve the control socket, poll every server, log and drive the outputs until cancelled."""
        control = ControlServer(self.control_path, self.status)
        await control.start()
        metrics_http: Any = None
        try:
            self._open_logs()
            if self.config.metrics_port is not None:
                from tsq.outputs.metrics import MetricsHttpServer

                metrics_http = MetricsHttpServer(self.config.metrics_port, self.status)
                await metrics_http.start()
            tasks = [asyncio.create_task(self._poll_loop(name, client), name=f"tsq-poll-{name}")
                     for name, client in self._clients.items()]
            tasks.append(asyncio.create_task(self._tick_loop(), name="tsq-outputs"))
            if self.refclock is not None:
                tasks.append(asyncio.create_task(self._refclock_loop(), name="tsq-refclock"))
            try:
                # gather raises the first task's unexpected error; cancellation ends all of them
                await asyncio.gather(*tasks)
            finally:
                await cancel_and_wait(tasks)
        finally:
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    await client.close()
            if metrics_http is not None:
                await metrics_http.close()
            if self.refclock is not None:
                self.refclock.close()
            self._close_logs()
            await control.close()

    def _open_logs(self) -> None:
        if not self.config.log_dir:
            return
        from tsq.fieldlog import GATEWAY_MODEL_FIELDS, GATEWAY_SAMPLE_FIELDS, FieldLog

        fs = self.config.fsync_interval_s
        self._sample_log = FieldLog(self.config.log_dir, "gateway-samples", GATEWAY_SAMPLE_FIELDS,
                                    fsync_interval_s=fs)
        self._model_log = FieldLog(self.config.log_dir, "gateway-model", GATEWAY_MODEL_FIELDS,
                                   fsync_interval_s=fs)

    def _close_logs(self) -> None:
        for lg in (self._sample_log, self._model_log):
            if lg is not None:
                with contextlib.suppress(Exception):
                    lg.flush(fsync=True)
                lg.close()
        self._sample_log = self._model_log = None

    async def _poll_loop(self, name: str, client: Any) -> None:
        from tsq.quic.client import TsqError

        down = 0          # failures in a row that left the client without a connection
        while True:
            now = clock.raw_ns()
            due = self.engine.next_poll(name, now)
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            try:
                ex = await client.sample(self.config.mode)
            except TsqError as exc:
                self.engine.on_timeout(name, clock.raw_ns())
                down = down + 1 if not client.connected else 0
                # A lost datagram, or a stalled connection the client drops and re-opens at the
                # next poll, is routine. A reconnection that fails is worth a warning (once), and
                # further attempts back off exponentially so a dead server is not hammered.
                log.log(logging.WARNING if down == 2 else logging.DEBUG, "%s", exc)
                if down >= 2:
                    await asyncio.sleep(min(BACKOFF_INITIAL_S * 2 ** (down - 2), self.config.backoff_max_s))
                continue
            if down >= 2:
                log.info("%s: answering again", name)
            down = 0
            now = clock.raw_ns()
            result = self.engine.on_exchange(ex, now)
            log.debug("%s: %s %s, offset %s ns, delay %d ns", name, ex.mode,
                      "accepted" if result.accepted else "rejected (" + result.reason + ")",
                      result.relative_offset_ns, result.delay_ns)
            self._log_sample(ex, result, now)
            self._update(now)

    async def _tick_loop(self) -> None:
        while True:
            self._update(clock.raw_ns())
            if self.config.metrics_file:
                from tsq.outputs.metrics import render_metrics, write_metrics_file

                try:
                    write_metrics_file(self.config.metrics_file, render_metrics(self.status()))
                except OSError as exc:
                    log.warning("metrics file %s: %s", self.config.metrics_file, exc)
            await asyncio.sleep(OUTPUT_TICK_S)

    async def _refclock_loop(self) -> None:
        while True:
            raw, real = _instant()
            if self.model.state(raw) == "synchronised":
                self.refclock.send(self.model, raw, real)
            await asyncio.sleep(REFCLOCK_INTERVAL_S)

    def _update(self, now_raw: int) -> None:
        """engine.update; on a selection round: the model log line, the system clock, the status line."""
        upd: Optional[ModelUpdate] = self.engine.update(now_raw)
        if upd is None:
            return
        raw, real = _instant()
        self.updates += 1
        self._last_update_raw, self._last_update_real = raw, real
        st = self.status()
        if self._model_log is not None:
            self._model_log.write({
                "time_utc": st["time_utc"] or utc_iso(real), "state": st["state"],
                "offset_ns": st["system_offset_ns"], "freq_ppm": st["freq_ppm"],
                "error_bound_ns": st["error_bound_ns"], "sources": upd.sources,
                "leap": st["leap"],
            }, now_unix_ns=real)
        line = summary_line(st)
        if not upd.decided:
            line += f"; {upd.reason}"
        elif (self.sysclock is not None and st["state"] == "synchronised"
              and st["system_offset_ns"] is not None):
            from tsq.outputs.sysclock import SysclockError

            try:
                # the kernel frequency follows the model's only once it is known to within 1 ppm
                ferr = st["freq_error_ppm"]
                freq = st["freq_ppm"] if ferr is not None and ferr < 1.0 else None
                line += "; " + self.sysclock.update(st["system_offset_ns"], freq, st["error_bound_ns"])
            except SysclockError as exc:
                line += f"; system clock NOT adjusted: {exc}"
        if not self.config.quiet:
            log.info("%s", line)

    def _log_sample(self, ex: Any, outcome: SampleOutcome, now_raw: int) -> None:
        """One gateway-samples line per accepted sample (offsets relative to the model)."""
        if self._sample_log is None or not outcome.accepted:
            return
        raw, real = _instant()
        st = self._core_status(raw, real)
        src: Dict[str, Any] = next((s for s in st["sources"] if s.get("name") == ex.server), {})
        rel = outcome.relative_offset_ns
        if rel is None:  # no model yet: relative to the system clock, as `tsq query` prints it
            rel = ex.offset_ns - (real - raw)
        self._sample_log.write({
            "time_utc": st["time_utc"] or utc_iso(real), "server": ex.server, "mode": ex.mode,
            "offset_ns": rel, "delay_ns": ex.delay_ns,
            "error_bound_ns": st["error_bound_ns"], "freq_ppm": st["freq_ppm"],
            "selection": src.get("selection"),
        }, now_unix_ns=real)


# ---------------------------------------------------------------------------------------- the CLI
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sync", help="keep a model of UTC from TSQ servers (the gateway daemon)",
        description="Poll TSQ servers over persistent QUIC connections, keep a model of UTC against "
        "CLOCK_MONOTONIC_RAW, log every sample, serve `tsq status`, and optionally discipline the "
        "system clock or feed chronyd. Settings come from --config FILE and/or the flags (flags win).",
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration (see examples/tsq-sync.toml)")
    p.add_argument("--server", action="append", metavar="HOST[:PORT]",
                   help="TSQ server (repeatable; default port 443); replaces the config's list")
    p.add_argument("--mode", choices=("auto", "datagram", "stream"), help="exchange mode (default auto)")
    p.add_argument("--minpoll", type=int, metavar="LOG2S", help="shortest poll, log2 s (default 0)")
    p.add_argument("--maxpoll", type=int, metavar="LOG2S", help="longest poll, log2 s (default 6)")
    p.add_argument("--log", dest="log_dir", metavar="DIR", help="field offset log directory (CSV)")
    p.add_argument("--fsync-interval", dest="fsync_interval_s", type=float, metavar="S")
    p.add_argument("--control", dest="control_path", metavar="PATH",
                   help=f"control socket (default {default_control_path()})")
    trust = p.add_argument_group("trust (default: system CAs)")
    trust.add_argument("--ca", metavar="FILE", help="trust this CA bundle (PEM) instead")
    trust.add_argument("--pin", metavar="sha256/BASE64", help="accept only this SPKI pin")
    trust.add_argument("--insecure", action="store_true", default=None,
                       help="accept any certificate (warns)")
    out = p.add_argument_group("outputs (all off by default)")
    out.add_argument("--adjust-system", action="store_true", default=None,
                     help="discipline the system clock with adjtimex (needs CAP_SYS_TIME)")
    out.add_argument("--makestep", type=float, metavar="S",
                     help="step instead of slewing when |offset| > S in the first updates (default 1.0)")
    out.add_argument("--makestep-limit", dest="makestep_limit", type=int, metavar="N",
                     help="updates in which a step is allowed (default 3)")
    out.add_argument("--panic", type=float, metavar="S",
                     help="never touch the clock for |offset| > S (default 1000; 0: no limit)")
    out.add_argument("--dry-run", action="store_true", default=None,
                     help="with --adjust-system: print what would be done, change nothing")
    out.add_argument("--refclock-sock", metavar="PATH", help="feed chronyd's `refclock SOCK PATH`")
    out.add_argument("--refclock-time-bits", choices=("auto", "32", "64"),
                     help="time_t width of chronyd's build (default auto)")
    out.add_argument("--metrics-file", metavar="FILE", help="write Prometheus metrics here every second")
    out.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics on 127.0.0.1:PORT")
    p.add_argument("--quiet", "-q", action="store_true", default=None, help="no status line per update")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SyncConfig:
    """SyncConfig from --config FILE overlaid with the flags given. Raises ConfigError."""
    values: Dict[str, Any] = load_config(args.config) if args.config else {}
    names = {f.name for f in fields(SyncConfig)}
    for name in names:
        if name == "servers":
            continue
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.server:
        values["servers"] = list(args.server)
    if not values.get("servers"):
        raise ConfigError("no TSQ server: give --server HOST[:PORT] or `servers` in --config FILE")
    return SyncConfig(**values)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("quic").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"tsq sync: {exc}", file=sys.stderr)
        return 2
    if config.insecure:
        print("tsq sync: WARNING: --insecure: server certificates are not checked; anyone on the path "
              "can feed this gateway a false time", file=sys.stderr)
    if config.dry_run and not config.adjust_system:
        print("tsq sync: --dry-run only applies to --adjust-system", file=sys.stderr)
    try:
        runner = SyncRunner(config)
    except (OSError, ValueError) as exc:
        print(f"tsq sync: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(runner))
    except (ControlError, OSError) as exc:   # control socket in use, log directory not writable
        print(f"tsq sync: {exc}", file=sys.stderr)
        return 1


async def _main(runner: SyncRunner) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(runner.run())
    stopping = []

    def stop(signame: str) -> None:
        stopping.append(signame)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop, sig.name)
    log.info("%d server(s), control socket %s", len(runner.config.servers), runner.control_path)
    try:
        await task
    except asyncio.CancelledError:
        if not stopping:
            raise
    log.info("stopped (%s)", stopping[0] if stopping else "done")
    return 0
