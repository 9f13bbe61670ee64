"""`DeviceDriver`: the thin asyncio edge that runs a `DeviceSession` over a `PortLink`.

Besides pinging and answering, it says what happens to the device in the log (one line per event:
handshake with the device's id and tick rate, reset, silence, a frame dropped for a new reason;
the port's own events, opened and lost, are the PortLink's) and puts the port's diagnostics
(link, low latency, why it cannot be opened) into the device's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, Optional

from tsq.bridge import portinfo
from tsq.bridge.device import (
    NS_PER_S,
    WARMUP_GAP_S,
    Accepted,
    Codec,
    DeviceSession,
    FieldLogLike,
)
from tsq.bridge.port import PortLink
from tsq.bridge.readprobe import ReadLatencyProbe
from tsq.bridge.status import DeviceStatus
from tsq.clock import raw_ns
from tsq.fieldlog import DeviceRow
from tsq.sync.model import TimeModel

log = logging.getLogger("tsq.bridge")

DROP_LOG_INTERVAL_S = 10.0


class DeviceDriver:
    """Runs a DeviceSession over a PortLink: pings every interval, a TIMESCALE after each good ping.

    Each measured ping follows an unmeasured warm-up ping by `warmup_gap_s` (None: no warm-up).
    After a second of idling, whatever carries a frame to the device and wakes it (a sleeping CPU,
    the USB or pty driver's work, the device's own idle loop) is slower on the way out than the
    answer is on the way back, a one-sided delay the four timestamps cannot see. Measured with the
    posix firmware on a pty at 1 ping/s: the forward leg's minimum was 53 µs against 16 µs back
    (+23 µs mean asymmetry); a ping 2 ms after a warm-up ping: 17 µs against 15 µs (+4 µs).
    """

    def __init__(self, link: PortLink, model: TimeModel, ping_interval_s: float = 1.0,
                 log: Optional[FieldLogLike] = None, codec: Optional[Codec] = None,
                 warmup_gap_s: Optional[float] = WARMUP_GAP_S,
                 reply_spin_max_ns: int = 0, read_probe: Optional[ReadLatencyProbe] = None) -> None:
        self.link = link
        self.reply_spin_max_ns = reply_spin_max_ns
        self.read_probe = read_probe
        # The link profile (the session's `link`): the one named by `link.link`, or detected now
        # from sysfs; PortLink detects it again at each open (the adapter behind a by-id path can
        # change) and `_on_open` passes it on.
        profile = portinfo.link_for(link.link, portinfo.resolve(link.path, link.sysfs_root))
        self.session = DeviceSession(link.path, model, codec, link=profile, baud=link.baud,
                                     ping_interval_ns=round(ping_interval_s * NS_PER_S))
        self.ping_interval_s = ping_interval_s
        self.warmup_gap_s = warmup_gap_s
        self.log = log
        self.internal_errors = 0
        self._wake = asyncio.Event()
        link.on_data = self._on_data
        link.on_open = self._on_open
        link.on_close = self._on_close
        self._outbox: list[bytes] = []
        self._resets_logged = 0
        self._drop_logged = ""
        self._drop_logged_at = -DROP_LOG_INTERVAL_S
        self._bad_seen = 0
        self._bad_logged = 0
        self._silent = False
        self._withheld = False
        self._implausible_before = 0

    def _on_open(self) -> None:
        if self.link.profile is not None and self.link.profile is not self.session.link:
            self.session.set_link(self.link.profile, self.link.baud)
        self._implausible_before += self._decoder_implausible()  # opened() starts a new decoder
        self._outbox.extend(self.session.opened())
        self._wake.set()

    def _on_close(self, reason: str) -> None:
        self.session.closed()
        self._silent = False

    def _on_data(self, data: bytes, t4: int) -> None:
        had_hello = self.session.hello
        if self.read_probe is not None and self.session.link.usb_frame_ns:
            self.session.read_latency_ns = self.read_probe.latency_ns() or 0
        try:
            accepted = self.session.received(data, t4)
        except Exception:
            # No byte stream may stop the bridge (or flood the log with tracebacks): a session bug
            # is logged once with its traceback, counted, and the bytes are lost.
            self.internal_errors += 1
            if self.internal_errors == 1:
                log.exception("%s: internal error on device data (counted, logged once)", self.link.path)
            return
        for acc in accepted:
            self._accepted(acc)
        self._log_events(had_hello)
        if self.session.hello is not had_hello:
            self._wake.set()  # handshake done: ping now rather than at the next tick

    def _log_events(self, had_hello: Any) -> None:
        s = self.session
        h = s.hello
        if h is not None and h is not had_hello:
            what = "handshake" if had_hello is None else "device reset (HELLO again)"
            log.info("%s: %s: device 0x%08x, firmware %s, ticks at %d Hz, capabilities 0x%x, "
                     "link %s", self.link.path, what, h.device_id, h.firmware, h.tick_hz,
                     h.capabilities, self.session.link.name)
            self._resets_logged = s.resets
        elif s.resets > self._resets_logged:
            log.info("%s: device reset (its ticks went back without a HELLO; resets %d)",
                     self.link.path, s.resets)
        self._resets_logged = s.resets
        bad = s.bad_frames
        if bad > self._bad_seen:
            why = str(getattr(s.decoder, "last_error", "")) or "bad frame"
            now = time.monotonic()
            # A new reason, at most one line per DROP_LOG_INTERVAL_S: a noisy line must not flood.
            if why != self._drop_logged and now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:
                log.warning("%s: dropped %d device frame(s), the last: %s (bad frames so far %d)",
                            self.link.path, bad - self._bad_logged, why, bad)
                self._drop_logged, self._drop_logged_at, self._bad_logged = why, now, bad
            self._bad_seen = bad

    def _log_withheld(self) -> None:
        ppm = self.session.withheld_ppm
        if (ppm is not None) != self._withheld:
            self._withheld = ppm is not None
            if ppm is not None:
                log.warning("%s: timescales withheld: the time source runs %+.0f ppm from the "
                            "device's clock, beyond the ±%.0f ppm a device accepts (a wall clock "
                            "being stepped or slewed hard?)", self.link.path, ppm,
                            self.session.codec.rate_tolerance_ppm)
            else:
                log.info("%s: time source back within the device's rate tolerance: timescales "
                         "sent again", self.link.path)

    def _check_silence(self) -> None:
        silent = self.session.state(raw_ns()) == "silent"
        if silent != self._silent:
            self._silent = silent
            if silent:
                log.warning("%s: device silent for more than %.0f s (port open)", self.link.path,
                            self.session.lost_after_ns / NS_PER_S)
            else:
                log.info("%s: device answering again", self.link.path)

    def _accepted(self, acc: Accepted) -> None:
        now = raw_ns()
        frame = self.session.make_timescale(now)
        if frame is not None:
            self._outbox.append(frame)
            self._wake.set()
        self._log_withheld()
        if self.log is not None and self.session.hello is not None:
            ts = self.session.last_timescale if frame is not None else None
            row: DeviceRow = {
                # the one timescale of the logs: the model's UTC at the raw instant of the ping
                "time_utc": self.session.model.utc_ns(acc.raw_ns), "raw_ns": acc.raw_ns,
                "poll_s": self.ping_interval_s,
                "device": f"0x{self.session.hello.device_id:08x}", "residual_ns": acc.residual_ns,
                "line_delay_ns": acc.line_delay_ns,
                # what the device was told it can trust (None: no TIMESCALE went out for this ping)
                "bound_ns": ts.bound_ns if ts is not None else None,
                "state": self.session.state(acc.raw_ns),
            }
            self.log.write(row, now_unix_ns=time.time_ns())

    async def run(self) -> None:
        next_ping = 0.0
        loop = asyncio.get_running_loop()
        while True:
            while self._outbox:
                await self.link.send(self._outbox.pop(0))
            now = loop.time()
            if self.link.connected and now >= next_ping:
                next_ping = now + self.ping_interval_s + self._dither_s()
                self._check_silence()
                if self.warmup_gap_s is not None and self.session.hello is not None:
                    warm = self.session.make_ping(raw_ns(), warmup=True)
                    if warm is not None:
                        t1w = await self.link.send(warm[1])
                        # The measured PING must not queue behind the warm-up's bytes: a pty's
                        # tcdrain returns at once, while the line may still be serialising them
                        # (up to a USB frame later). And it gets its own dither: on an adapter
                        # tcdrain is tied to the frame that carried the warm-up, so the measured
                        # PING would otherwise meet its frame at the same phase every time.
                        busy = 0 if t1w is None else t1w + self.session.busy_after_write_ns() - raw_ns()
                        await asyncio.sleep(max(0, busy) / NS_PER_S + self.warmup_gap_s + self._dither_s())
                ping = self.session.make_ping(raw_ns())
                if ping is not None:
                    seq, frame = ping
                    t1 = await self.link.send(frame, self.session.reply_window_ns(self.reply_spin_max_ns))
                    if t1 is not None:
                        acc = self.session.sent(seq, t1)
                        if acc is not None:
                            self._accepted(acc)
                continue
            self._wake.clear()
            timeout = max(0.0, next_ping - loop.time()) if self.link.connected else 0.5
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dither_s(self) -> float:
        """A random part of a USB frame added to each ping interval and to the warm-up gap: a PING
        must meet its frame at every phase for some PINGs to wait almost nothing for it (the edge the
        fit anchors to on USB, tsq.bridge.links); at a steady interval the phase would stay where it
        started."""
        frame_ns = self.session.link.usb_frame_ns
        return random.random() * frame_ns / NS_PER_S if frame_ns else 0.0

    def status(self) -> DeviceStatus:
        return self.session.status(raw_ns()).with_port(
            self.link.port_status(), self._implausible_before + self._decoder_implausible())

    def _decoder_implausible(self) -> int:
        return int(getattr(self.session.decoder, "implausible", 0))
