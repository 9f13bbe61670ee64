"""The bridge as a service: one driver per serial port, fed by a TimeModel, reporting status.

`Bridge` is what `tsq bridge`, `python -m tsq.bridge` and `tsq demo` run. Each port gets a
`PortLink` (open, hot-plug, stamped I/O) and either a device driver (binary protocol: handshake,
pings, TIMESCALE; see `tsq.bridge.device`) or an NMEA writer (`--nmea`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from tsq.bridge import links, nmea, portinfo
from tsq.bridge.device import WARMUP_GAP_S
from tsq.bridge.driver import DeviceDriver
from tsq.bridge.port import Backoff, PortLink
from tsq.bridge.readprobe import ReadLatencyProbe
from tsq.bridge.status import DeviceStatus
from tsq.clock import raw_ns
from tsq.fieldlog import DEVICE_FIELDS, FieldLog
from tsq.sync.model import TimeModel
from tsq.tasks import cancel_and_wait

NS_PER_S = 1_000_000_000

log = logging.getLogger("tsq.bridge")




@dataclass
class BridgeConfig:
    ports: list[str]
    baud: int = 115200
    nmea: bool = False
    nmea_position: Optional[Tuple[float, float]] = None
    ping_interval_s: float = 1.0
    warmup_ping: bool = True        # an unmeasured ping 2 ms before each measured one (DeviceDriver)
    reply_spin_ms: float = 0.0      # the longest reply window (DeviceDriver, PortLink.send); 0: off
    read_probe: bool = False        # the host's read latency off the USB grid (tsq.bridge.readprobe)
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    log_dir: Optional[str] = None
    fsync_interval_s: float = 5.0
    link: str = "auto"              # a profile of tsq.bridge.links for every port, or detect it
    source: str = ""                # where the devices' time comes from, for the start line
    sysfs_root: str = portinfo.SYSFS          # roots of the port detection (tests: a fake tree)
    by_id_dir: str = portinfo.BY_ID_DIR
    extra: dict[str, Any] = field(default_factory=dict)


def model_rate(model: TimeModel, raw: int, span_ns: int = NS_PER_S) -> Optional[float]:
    """d(utc)/d(raw) of the model around `raw` (None while it has no time)."""
    a = model.utc_ns(raw)
    b = model.utc_ns(raw + span_ns)
    if a is None or b is None:
        return None
    return (b - a) / span_ns


class NmeaWriter:
    """Writes $GPZDA + $GPRMC at the top of every UTC second on one port."""

    def __init__(self, link: PortLink, model: TimeModel, position: Optional[Tuple[float, float]]) -> None:
        self.link = link
        self.model = model
        self.position = position
        self.seconds_sent = 0
        self.bytes_ignored = 0
        self.last_start_error_ns: Optional[int] = None
        self.last_sent_raw: Optional[int] = None

    def on_data(self, data: bytes, t4: int) -> None:
        # A GPS receiver's consumer may send configuration; we have nothing to answer.
        self.bytes_ignored += len(data)

    async def run(self) -> None:
        while True:
            await self.link.wait_connected()
            raw = raw_ns()
            utc = self.model.utc_ns(raw)
            rate = model_rate(self.model, raw)
            if utc is None or rate is None:
                await asyncio.sleep(0.25)
                continue
            second = nmea.next_second(utc)
            target = nmea.raw_at_utc(second * NS_PER_S, raw, utc, rate)
            if target - raw < 5_000_000:
                # Too close to the boundary to be on time: serve the next second instead.
                second += 1
                target = nmea.raw_at_utc(second * NS_PER_S, raw, utc, rate)
            await asyncio.sleep(max(0.0, (target - raw_ns()) / 1e9 - 0.02))
            # Re-aim with a fresh model reading: the model may have been updated meanwhile.
            now = raw_ns()
            u = self.model.utc_ns(now)
            if u is None:
                continue
            target = nmea.raw_at_utc(second * NS_PER_S, now, u, rate)
            if target < now:
                continue
            valid = self.model.state(now) == "synchronised"
            burst = nmea.second_burst(second, valid, self.position)
            start = await self.link.send_at(burst, target)
            if start is not None:
                self.seconds_sent += 1
                self.last_start_error_ns = start - target
                self.last_sent_raw = start

    def status(self) -> DeviceStatus:
        now = raw_ns()
        age = None if self.last_sent_raw is None else round((now - self.last_sent_raw) / 1e9, 3)
        return DeviceStatus(
            device="nmea", port=self.link.path,
            state=self.model.state(now) if self.link.connected else "disconnected",
            firmware=None, residual_ns=self.last_start_error_ns, line_delay_ns=None,
            bound_ns=self.model.error_bound_ns(now), last_seen_age_s=age, bad_frames=0,
        ).with_port(self.link.port_status())


class Bridge:
    """All ports of one bridge process."""

    def __init__(self, config: BridgeConfig, model: TimeModel) -> None:
        if config.link != "auto":
            links.profile(config.link)  # ValueError naming the known links, before anything starts
        self.config = config
        self.model = model
        self.links: list[PortLink] = []
        self.drivers: list[Any] = []
        # One probe for every port (started by `run`): the latency is the host's, not a port's.
        self.read_probe = ReadLatencyProbe() if config.read_probe and not config.nmea else None
        self._log: Any = None
        if config.log_dir is not None and not config.nmea:
            self._log = FieldLog(config.log_dir, "devices", DEVICE_FIELDS,
                                 fsync_interval_s=config.fsync_interval_s)
        for path in config.ports:
            self._add_port(path)

    def _add_port(self, path: str) -> None:
        cfg = self.config
        backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s)
        link = PortLink(path, cfg.baud, on_data=lambda b, t: None, backoff=backoff, link=cfg.link,
                        sysfs_root=cfg.sysfs_root, by_id_dir=cfg.by_id_dir)
        driver: Any
        if self.config.nmea:
            driver = NmeaWriter(link, self.model, self.config.nmea_position)
            link.on_data = driver.on_data
        else:
            gap = WARMUP_GAP_S if self.config.warmup_ping else None
            driver = DeviceDriver(link, self.model, ping_interval_s=self.config.ping_interval_s,
                                  log=self._log, warmup_gap_s=gap,
                                  reply_spin_max_ns=round(self.config.reply_spin_ms * 1e6),
                                  read_probe=self.read_probe)
        self.links.append(link)
        self.drivers.append(driver)

    def status(self) -> list[DeviceStatus]:
        """Each port's device, typed."""
        return [d.status() for d in self.drivers]

    def start_line(self) -> str:
        """What the bridge serves, in one line for the log."""
        cfg = self.config
        ports = []
        for path in cfg.ports:
            info = portinfo.resolve(path, cfg.sysfs_root)
            link = portinfo.link_for(cfg.link, info).name
            how = "detected" if cfg.link == "auto" else "as given; detected"
            ports.append(f"{path} (link {link}, {how}: {info.describe()})")
        what = "NMEA" if cfg.nmea else "binary protocol"
        ping = "" if cfg.nmea else (f", ping every {cfg.ping_interval_s:g} s"
                                    + (" after a warm-up ping" if cfg.warmup_ping else ""))
        return (f"bridge: {len(ports)} port(s) at {cfg.baud} baud, {what}: {', '.join(ports)}; "
                f"time from {cfg.source or 'the model given'}{ping}")

    async def run(self) -> None:
        """Run every port until cancelled; closes ports and the log on the way out."""
        log.info("%s", self.start_line())
        if self.read_probe is not None:
            self.read_probe.start()
        tasks = [asyncio.create_task(link.run()) for link in self.links]
        tasks += [asyncio.create_task(d.run()) for d in self.drivers]
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_and_wait(tasks)
            if self.read_probe is not None:
                self.read_probe.stop()
            if self._log is not None:
                self._log.close()

