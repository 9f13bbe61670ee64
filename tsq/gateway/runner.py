"""The gateway's composition root: the sync engine, one TSQ client per server, logs, outputs and the
control socket, on the running asyncio loop (`tsq sync`, the bridge and `tsq demo` run it).

One persistent TsqClient per server, each polled when its scheduler says (tsq.session.scheduler,
which the simulator runs too); every exchange goes to the engine, every accepted sample and every
model update to the field log; after each model update the outputs run (system clock discipline,
chrony SOCK refclock) and a status line is printed. The control socket answers `tsq status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from tsq import clock
from tsq.auth import Verifier, load_verify_key
from tsq.bridge.status import DeviceStatus
from tsq.fieldlog import GATEWAY_MODEL, GATEWAY_SAMPLES, FieldLog, ModelRow, SampleRow
from tsq.gateway.control import ControlServer, default_control_path
from tsq.gateway.driftfile import SAVE_INTERVAL_S as DRIFT_SAVE_INTERVAL_S
from tsq.gateway.driftfile import load_drift, save_drift
from tsq.gateway.notify import SystemdNotifier
from tsq.gateway.settings import SyncConfig
from tsq.gateway.status_cli import summary_line
from tsq.outputs.metrics import MetricsHttpServer, render_metrics, write_metrics_file
from tsq.outputs.refclock import RefclockOutput
from tsq.outputs.sysclock import SysclockError, SystemClockAdjuster
from tsq.quic import compat
from tsq.quic.client import TsqClient, TsqError
from tsq.quic.trust import normalise_pin
from tsq.session.scheduler import SchedulerConfig, SourceScheduler
from tsq.status import (
    DriftStatus,
    GatewayStatus,
    RefclockOutputStatus,
    SourceLink,
    SystemClockOutputStatus,
)
from tsq.sync.engine import Engine, ModelUpdate, SampleOutcome
from tsq.sync.exchange import Exchange
from tsq.sync.tracking import TrackingStatus
from tsq.tasks import cancel_and_wait

log = logging.getLogger("tsq.sync")

NS_PER_S = 1_000_000_000
OUTPUT_TICK_S = 1.0          # metrics file, holdover checks
REFCLOCK_INTERVAL_S = 0.25   # chronyd's SOCK refclock takes the median of the samples of each poll:
                             # several per second keep even `poll 0` fed


def check_trust(config: SyncConfig) -> None:
    """Refuse, before anything starts, trust settings that would fail at every connection attempt
    (ValueError with one line): a malformed pin, a CA file that cannot be read, a bad mode."""
    if config.pin is not None:
        normalise_pin(config.pin)           # ValueError naming the pin
    if config.ca is not None:
        try:
            with open(config.ca, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise ValueError(f"--ca {config.ca}: {exc.strerror or exc}") from None
    if config.mode not in ("auto", "datagram", "stream"):
        raise ValueError(f"mode {config.mode!r}: use auto, datagram or stream")
    if config.minpoll > config.maxpoll:
        raise ValueError(f"minpoll {config.minpoll} is above maxpoll {config.maxpoll}")


def trust_verifier(verify_key: Optional[str], key_id: int, require_signature: bool) -> Optional[Verifier]:
    """The Signature Block verifier of --verify-key (which implies requiring signed responses).

    ValueError (a KeyFileError naming the file) for an unreadable key, or for --require-signature
    without a key: a signature nobody checks proves nothing."""
    if verify_key is None:
        if require_signature:
            raise ValueError("--require-signature needs --verify-key FILE (the key to check them with)")
        return None
    return Verifier({key_id: load_verify_key(verify_key)})


CAPABILITIES = compat.capabilities()


def client_status(client: TsqClient) -> SourceLink:
    """What the QUIC edge knows of one source, shown beside its `sources` entry of the status: the
    negotiated ALPN (tsq/1 is the deployed implementation's), connections and resumptions, and the
    responses discarded under draft §6.6 with the last reason."""
    return SourceLink(alpn=client.alpn_protocol, connected=client.connected, connections=client.connections,
                      resumed=client.resumed, discarded=client.discarded_responses,
                      last_discard=client.discards[-1] if client.discards else None,
                      fell_back_to_streams=bool(client.fallbacks))


def _instant() -> tuple[int, int]:
    """(raw ns, realtime ns) read as close together as possible (narrowest of 3 brackets)."""
    c = clock.raw_realtime()
    return c.ref_ns, c.sys_ns


class SyncRunner:
    """The engine, its clients, logs, outputs and control socket, on the running asyncio loop."""

    def __init__(self, config: SyncConfig) -> None:
        if not config.servers:
            raise ValueError("no TSQ server given")
        check_trust(config)
        self.sysclock: Optional[SystemClockAdjuster] = None
        if config.adjust_system:
            # Raises SysclockError without CAP_SYS_TIME (unless dry-run): refuse before starting.
            self.sysclock = SystemClockAdjuster(
                makestep=config.makestep, makestep_limit=config.makestep_limit,
                panic=config.panic, dry_run=config.dry_run)
        self.config = config
        self.engine = Engine(minpoll=config.minpoll, maxpoll=config.maxpoll)
        self.model = self.engine.model
        self._devices: Optional[Callable[[], Sequence[DeviceStatus]]] = None
        self._clients: Dict[str, TsqClient] = {}
        self.schedulers: Dict[str, SourceScheduler] = {}
        self._sample_log: Optional[FieldLog] = None
        self._model_log: Optional[FieldLog] = None
        self._last_update_raw: Optional[int] = None
        self._last_update_real: Optional[int] = None
        self.updates = 0
        self.notifier = SystemdNotifier()
        self._running = False
        self._closing: Set[asyncio.Future[None]] = set()
        self.drift_note: Optional[str] = None   # what became of the drift file at start, in words
        self.drift_save_error: Optional[str] = None
        if config.drift_file:
            record, note = load_drift(config.drift_file)
            if record is not None:
                raw, real = _instant()
                note += ": " + self.engine.import_drift(record, raw, real)
            self.drift_note = note
        self.control_path = config.control_path or default_control_path()
        self.refclock: Optional[RefclockOutput] = None
        if config.refclock_sock:
            self.refclock = RefclockOutput(config.refclock_sock, config.refclock_time_bits)
        verifier = trust_verifier(config.verify_key, config.key_id, config.require_signature)
        self._verifier = verifier
        self._poll_tasks: Dict[str, asyncio.Task[None]] = {}
        for server in config.servers:
            self._add_server(server)

    def _add_server(self, server: str) -> str:
        config = self.config
        client = TsqClient(server, ca=config.ca, pin=config.pin, insecure=config.insecure,
                           allow_legacy_alpn=config.allow_legacy_alpn, verifier=self._verifier,
                           require_signature=self._verifier is not None, paired=config.paired,
                           timeout_s=config.timeout_s, connect_timeout_s=config.connect_timeout_s)
        if client.name in self._clients:
            raise ValueError(f"server {client.name} given twice")
        self._clients[client.name] = client
        self.schedulers[client.name] = SourceScheduler(client.name, self.engine, SchedulerConfig(
            backoff_max_ns=round(config.backoff_max_s * NS_PER_S)))
        return client.name

    def reconfigure(self, new: SyncConfig) -> List[str]:
        """Apply a reloaded configuration's servers, log directory and verbosity while running (the
        gateway's SIGHUP); returns what was done, one line each."""
        lines: List[str] = []
        old = self.config
        self.config = new
        want = {TsqClient(s).name: s for s in new.servers}
        for name in [n for n in self._clients if n not in want]:
            task = self._poll_tasks.pop(name, None)
            if task is not None:
                task.cancel()
            client = self._clients.pop(name)
            closing = asyncio.ensure_future(client.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            self.schedulers.pop(name, None)
            self.engine.remove_source(name)
            lines.append(f"reload: server {name} removed")
        for name, spec in want.items():
            if name not in self._clients:
                self._add_server(spec)
                if self._running:
                    self._poll_tasks[name] = asyncio.create_task(
                        self._poll_loop(name, self._clients[name]), name=f"tsq-poll-{name}")
                lines.append(f"reload: server {name} added")
        if new.log_dir != old.log_dir:
            self._close_logs()   # fsyncs: a reload is rare and the old directory must be complete
            self._open_logs()
            lines.append(f"reload: field logs now in {new.log_dir or '(none)'}")
        return lines or ["reload: applied"]

    # ------------------------------------------------------------------------------------ status
    def set_device_source(self, fn: Callable[[], Sequence[DeviceStatus]]) -> None:
        """The bridge in this process: its devices are part of the status."""
        self._devices = fn

    def tracking(self, raw: int, real: int) -> TrackingStatus:
        """The engine's tracking at one instant; a selection round that left no model still counts
        as the last update."""
        tr = self.engine.tracking(raw, real)
        if tr.last_update_utc_ns is None and self._last_update_raw is not None:
            tr = dataclasses.replace(tr, last_update_utc_ns=self._last_update_real,
                                     last_update_age_s=round((raw - self._last_update_raw) / 1e9, 3))
        return tr

    def status(self) -> GatewayStatus:
        """The typed status (tsq.status): tracking, links, outputs, logs, devices."""
        refclock = sysclock = None
        if self.refclock is not None:
            refclock = RefclockOutputStatus(path=self.refclock.path, sent=self.refclock.sent,
                                            dropped=self.refclock.dropped, error=self.refclock.last_error)
        if self.sysclock is not None:
            last = self.sysclock.last
            sysclock = SystemClockOutputStatus(dry_run=self.sysclock.dry_run, updates=self.sysclock.updates,
                                               last_action=None if last is None else last.kind)
        devices: Optional[Tuple[DeviceStatus, ...]] = None
        errors: Tuple[str, ...] = ()
        if self._devices is not None:
            try:
                devices = tuple(self._devices())
            except Exception as exc:  # a provider's bug shows in the status, not as a dead daemon
                devices, errors = (), (f"devices: {exc!r}",)
        return GatewayStatus(
            tracking=self.tracking(*_instant()),
            links={name: client_status(client) for name, client in self._clients.items()},
            refclock=refclock, system_clock=sysclock,
            logging=None if self._sample_log is None else self._sample_log.health,
            drift=DriftStatus(file=self.config.drift_file, at_start=self.drift_note,
                              error=self.drift_save_error) if self.config.drift_file else None,
            capabilities=CAPABILITIES, devices=devices, errors=errors)

    def status_json(self) -> Dict[str, Any]:
        """The control socket's status object (docs/internals.md)."""
        return self.status().to_json()

    # ------------------------------------------------------------------------------------ running
    async def run(self) -> None:
        """Serve the control socket, poll every server, log and drive the outputs until cancelled."""
        control = ControlServer(self.control_path, self.status_json)
        await control.start()
        metrics_http: Optional[MetricsHttpServer] = None
        try:
            self._open_logs()
            if self.config.metrics_port is not None:
                metrics_http = MetricsHttpServer(self.config.metrics_port, self.status)
                await metrics_http.start()
            self._poll_tasks = {name: asyncio.create_task(self._poll_loop(name, client),
                                                          name=f"tsq-poll-{name}")
                                for name, client in self._clients.items()}
            self._running = True
            tasks = [asyncio.create_task(self._tick_loop(), name="tsq-outputs")]
            if self.refclock is not None:
                tasks.append(asyncio.create_task(self._refclock_loop(self.refclock), name="tsq-refclock"))
            try:
                # The output loops run until cancelled; a poll loop only ends with an unexpected
                # error, which ends the runner (a reload may cancel single poll loops: not an error).
                while True:
                    watched = [*tasks, *self._poll_tasks.values()]
                    done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        if not t.cancelled() and t.exception() is not None:
                            raise t.exception()  # type: ignore[misc]
                    self._poll_tasks = {n: t for n, t in self._poll_tasks.items() if not t.done()}
            finally:
                self._running = False
                await cancel_and_wait([*tasks, *self._poll_tasks.values()])
        finally:
            self.notifier.stopping()
            self.save_drift()
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    await client.close()
            if metrics_http is not None:
                await metrics_http.close()
            if self.refclock is not None:
                self.refclock.close()
            # Flushing waits for the disk (up to its timeout): never on the loop itself.
            await asyncio.get_running_loop().run_in_executor(None, self._close_logs)
            await control.close()

    def _open_logs(self) -> None:
        if not self.config.log_dir:
            return
        fs = self.config.fsync_interval_s
        # Never raises for the disk: a directory that cannot be made, a full or read-only disk show
        # in `status` ("logging") and the log resumes by itself (tsq.fieldlog).
        self._sample_log = FieldLog(self.config.log_dir, GATEWAY_SAMPLES, fsync_interval_s=fs)
        self._model_log = FieldLog(self.config.log_dir, GATEWAY_MODEL, fsync_interval_s=fs)

    def _close_logs(self) -> None:
        for lg in (self._sample_log, self._model_log):
            if lg is not None:
                lg.flush(fsync=True)
                lg.close()
        self._sample_log = self._model_log = None

    def _next_poll_s(self, now_raw: int) -> float:
        """Seconds until the earliest next poll of any source (when the next model row is due)."""
        due = min((s.next_poll(now_raw) for s in self.schedulers.values()), default=now_raw)
        return round(max(0, due - now_raw) / NS_PER_S, 3)

    async def _poll_loop(self, name: str, client: TsqClient) -> None:
        sched = self.schedulers[name]
        while True:
            now = clock.raw_ns()
            due = sched.next_poll(now)
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            try:
                ex = await client.sample(self.config.mode)
            except TsqError as exc:
                # A lost datagram, or a stalled connection the client drops and re-opens at the next
                # poll, is routine. A reconnection that fails is worth a warning (once); further
                # attempts back off (jittered, exponential) so a dead server is not hammered.
                sched.on_failure(clock.raw_ns(), client.connected)
                log.log(logging.WARNING if sched.down == sched.config.down_after else logging.DEBUG,
                        "%s", exc)
                continue
            if sched.backing_off:
                log.info("%s: answering again", name)
            now = clock.raw_ns()
            result = sched.on_sample(ex, now)
            log.debug("%s: %s %s, offset %s ns, delay %d ns", name, ex.mode,
                      "accepted" if result.accepted else "rejected (" + result.reason + ")",
                      result.relative_offset_ns, result.delay_ns)
            self._log_sample(ex, result, now)
            self._update(now)

    def save_drift(self) -> None:
        """Write the drift file now (when there is a frequency worth saving); never raises."""
        if not self.config.drift_file:
            return
        raw, real = _instant()
        record = self.engine.export_drift(raw, real)
        if record is None:
            return
        try:
            save_drift(self.config.drift_file, record)
            self.drift_save_error = None
        except OSError as exc:
            message = f"drift file {self.config.drift_file}: not written: {exc.strerror or exc}"
            if message != self.drift_save_error:
                log.warning("%s", message)
            self.drift_save_error = message

    async def _tick_loop(self) -> None:
        started = clock.raw_ns()
        saved = started
        while True:
            now = clock.raw_ns()
            self._update(now)
            self.notifier.watchdog()
            if now - saved >= DRIFT_SAVE_INTERVAL_S * NS_PER_S:
                saved = now
                self.save_drift()
            if not self.notifier.ready_sent and now - started >= self.config.ready_timeout_s * NS_PER_S:
                # Boot must go on without time: say ready, and say why it is not synchronised.
                self.notifier.ready(f"not synchronised after {self.config.ready_timeout_s:g} s: "
                                    f"{self.engine.model.reason}")
            if self.config.metrics_file:
                try:
                    write_metrics_file(self.config.metrics_file, render_metrics(self.status()))
                except OSError as exc:
                    log.warning("metrics file %s: %s", self.config.metrics_file, exc)
            await asyncio.sleep(OUTPUT_TICK_S)

    async def _refclock_loop(self, refclock: RefclockOutput) -> None:
        while True:
            raw, real = _instant()
            if self.model.state(raw) == "synchronised":
                refclock.send(self.model, raw, real)
            await asyncio.sleep(REFCLOCK_INTERVAL_S)

    def _update(self, now_raw: int) -> None:
        """engine.update; on a selection round: the model log line, the system clock, the status line."""
        upd: Optional[ModelUpdate] = self.engine.update(now_raw)
        if upd is None:
            return
        raw, real = _instant()
        self.updates += 1
        self._last_update_raw, self._last_update_real = raw, real
        tr = self.tracking(raw, real)
        if self._model_log is not None:
            row: ModelRow = {
                "time_utc": tr.utc_ns, "raw_ns": raw, "poll_s": self._next_poll_s(raw),
                "state": tr.state, "offset_ns": tr.system_offset_ns, "freq_ppm": tr.freq_ppm,
                "freq_error_ppm": tr.freq_error_ppm, "error_bound_ns": tr.error_bound_ns,
                "sources": f"{upd.agreeing}/{upd.configured}", "leap": tr.leap,
                "reason": tr.reason or upd.reason,
            }
            self._model_log.write(row, now_unix_ns=real)
        line = summary_line(tr)
        if not upd.decided:
            line += f"; {upd.reason}"
        elif (self.sysclock is not None and upd.refreshed and tr.synchronised
              and tr.system_offset_ns is not None):
            # Only a round that re-anchored the model on new samples steers the clock; a round that
            # merely kept it (a source came or went) has nothing new to say.
            try:
                # the kernel frequency follows the model's only once it is known to within 1 ppm
                ferr = tr.freq_error_ppm
                freq = tr.freq_ppm if ferr is not None and ferr < 1.0 else None
                line += "; " + self.sysclock.update(tr.system_offset_ns, freq, tr.error_bound_ns)
            except SysclockError as exc:
                line += f"; system clock NOT adjusted: {exc}"
        if not self.config.quiet:
            log.info("%s", line)
        if tr.synchronised:
            self.notifier.ready(line)
        else:
            self.notifier.status(line)

    def _log_sample(self, ex: Exchange, outcome: SampleOutcome, now_raw: int) -> None:
        """One gateway-samples line per accepted sample (offsets relative to the model)."""
        if self._sample_log is None or not outcome.accepted:
            return
        raw, real = _instant()
        tr = self.tracking(raw, real)
        src = next((s for s in tr.sources if s.name == ex.server), None)
        rel = outcome.relative_offset_ns
        if rel is None:  # no model yet: relative to the system clock, as `tsq query` prints it
            rel = ex.offset_ns - (real - raw)
        row: SampleRow = {
            "time_utc": self.model.utc_ns(raw), "raw_ns": raw,
            "poll_s": round(max(0, self.schedulers[ex.server].next_poll(raw) - raw) / NS_PER_S, 3),
            "server": ex.server, "mode": ex.mode, "offset_ns": rel, "delay_ns": ex.delay_ns,
            "error_bound_ns": tr.error_bound_ns, "freq_ppm": tr.freq_ppm,
            "selection": None if src is None else src.selection,
        }
        self._sample_log.write(row, now_unix_ns=real)
