"""Per-device session: handshake, periodic pings, the tick regression and TIMESCALE updates.

`DeviceSession` is sans-IO: it is handed bytes with their arrival stamp (T4, raw ns), the stamp
after each of its frames left (T1), and the current raw time; it returns frames to send and keeps
the device's status. `tsq.bridge.driver.DeviceDriver` is the thin asyncio edge that runs it over a
`PortLink`.

The TIMESCALE a device is sent says: "at your tick t0 it is UTC u0; from there UTC advances `rate`
per tick; trust it to within `bound`". The bound is the engine's bound at t0 plus the line's (the
feasible region of `tsq.bridge.feasible`: every clock relation the pings allow, given the link's
minimum delays), evaluated when the next update is due.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Optional, Protocol

from tsq.bridge import frames, links
from tsq.bridge.feasible import FeasibleFit, PingSample
from tsq.bridge.status import DeviceStatus
from tsq.sync.model import TimeModel

REPLY_HISTORY = 16            # round trips the reply window is sized from
REPLY_WINDOW_SLACK_NS = 300_000

NS_PER_S = 1_000_000_000




class FieldLogLike(Protocol):
    def write(self, row: Any, *, now_unix_ns: int) -> None: ...


@dataclass
class _Pending:
    seq: int
    t1_raw: Optional[int] = None
    sent_at_raw: int = 0
    reply: Optional[tuple[int, int, int]] = None   # (t2_ticks, t3_ticks, t4_raw) if it came first
    warmup: bool = False                           # answered but never measured (see DeviceDriver)


@dataclass(frozen=True)
class Accepted:
    """One ping that went into the fit, for the field log and the status."""

    raw_ns: int
    residual_ns: int
    line_delay_ns: int
    bound_ns: Optional[int]


# -- the session's view of the protocol (the adapter onto tsq.bridge.frames) ------------------------
@dataclass(frozen=True)
class HelloEvent:
    device_id: int
    firmware: str
    tick_hz: int
    capabilities: int


@dataclass(frozen=True)
class PongEvent:
    seq: int
    t2_ticks: int
    t3_ticks: int


@dataclass(frozen=True)
class Timescale:
    """An affine map device ticks -> UTC: utc(t) = utc0_ns + (t - t0_ticks) * rate."""

    t0_ticks: int
    utc0_ns: int
    ns_per_tick: float     # rate: UTC ns per device tick
    bound_ns: int
    leap: int
    synchronised: bool


class Codec(Protocol):
    """The session's view of the serial protocol: frames in and out, as events."""

    def new_decoder(self) -> Any: ...          # .feed(bytes) -> frames; .bad_frames: int
    def to_event(self, frame: Any) -> Optional[object]: ...   # HelloEvent | PongEvent | None
    def encode_hello_request(self, seq: int) -> bytes: ...
    def encode_ping(self, seq: int) -> bytes: ...
    def encode_timescale(self, seq: int, ts: Timescale) -> bytes: ...

    @property
    def rate_tolerance_ppm(self) -> float: ...  # a device refuses a timescale's rate beyond this


class FramesCodec:
    """The Codec onto `tsq.bridge.frames` (firmware-bridge/PROTOCOL.md, version 1)."""

    # A device that hears nothing for this long reports itself unsynchronised (PROTOCOL.md).
    valid_ms = 10_000
    # A device refuses a TIMESCALE whose ns_per_tick is further than this from 1e9 / tick_hz
    # (PROTOCOL.md, TSQB_RATE_TOL_PPM): no crystal is that far off.
    rate_tolerance_ppm = 1000.0

    def new_decoder(self) -> frames.StreamDecoder:
        return frames.StreamDecoder()

    def to_event(self, frame: Any) -> Optional[object]:
        if isinstance(frame, frames.Hello):
            fw = ".".join(str(x) for x in frame.firmware)
            return HelloEvent(frame.device_id, fw, frame.tick_hz, frame.capabilities)
        if isinstance(frame, frames.Pong):
            return PongEvent(frame.seq, frame.t2_ticks, frame.t3_ticks)
        return None  # STATUS and frames meant for a device carry nothing the session uses yet

    def encode_hello_request(self, seq: int) -> bytes:
        return frames.encode(frames.HelloRequest(seq))

    def encode_ping(self, seq: int) -> bytes:
        return frames.encode(frames.Ping(seq))

    def encode_timescale(self, seq: int, ts: Timescale) -> bytes:
        flags = frames.FLAG_SYNCHRONISED if ts.synchronised else 0
        return frames.encode(frames.TimescaleMsg(
            seq, ts.t0_ticks & (2**64 - 1), ts.utc0_ns, frames.q32_rate(ts.ns_per_tick),
            max(0, ts.bound_ns), ts.leap, flags, self.valid_ms))


class DeviceSession:
    """One device on one port: everything but the I/O.

    `link` and `baud` say what the line guarantees: a PING reaches the device no sooner than its
    serialisation after T1, a PONG is seen no sooner than its serialisation plus the link's fixed
    receive delay after T3 (`links.LinkProfile`); both are shortened by `baud_tolerance`, since a
    UART's actual rate may be that much faster than nominal (an AVR at 16 MHz runs 115200 at +2.1 %)
    and a minimum taken too long would exclude the truth. `wander_ppb`: how far the device's
    frequency against the raw clock may move over the fit's window (see tsq.bridge.feasible).
    ValueError for a tolerance or wander out of range; nothing a device sends raises.
    """

    def __init__(
        self,
        port: str,
        model: TimeModel,
        codec: Optional[Codec] = None,
        ping_interval_ns: int = NS_PER_S,
        ping_timeout_ns: int = 2 * NS_PER_S,
        lost_after_ns: int = 5 * NS_PER_S,
        link: links.LinkProfile = links.PROFILES["pty"],
        baud: int = 115200,
        baud_tolerance: float = 0.03,
        wander_ppb: float = 10.0,
    ) -> None:
        if not 0 <= baud_tolerance < 1 or not 0 <= wander_ppb < 1e6:
            raise ValueError("baud_tolerance must be in [0, 1) and wander_ppb in [0, 1e6)")
        self.port = port
        self.model = model
        self.ping_interval_ns = ping_interval_ns
        self.ping_timeout_ns = ping_timeout_ns
        self.lost_after_ns = lost_after_ns
        self.link = link
        self.baud = baud
        self.baud_tolerance = baud_tolerance
        self.wander_ppb = wander_ppb
        self.hello: Optional[HelloEvent] = None
        self.fit: Optional[FeasibleFit] = None
        self.read_latency_ns = 0   # the host's read latency (tsq.bridge.readprobe), for the USB grid
        self.codec: Codec = codec if codec is not None else FramesCodec()
        self.decoder = self.codec.new_decoder()
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._last_seen_raw: Optional[int] = None
        self._last_t2: Optional[int] = None
        # PING and PONG have the same length (PROTOCOL.md): the PING's is what both legs carry.
        self.frame_bytes = len(self.codec.encode_ping(0))
        self.min_out_ns, self.min_back_ns = self.line_minimums()
        self.connected = False
        self.resets = 0
        self.pings_sent = 0
        self.pongs = 0
        self.timescales_sent = 0
        # The time source ran this far (ppm) from the device's ticks when the last timescale was
        # due: beyond the device's tolerance it would be refused, so it is withheld (None: sent).
        self.withheld_ppm: Optional[float] = None
        self.timescales_withheld = 0
        self.last: Optional[Accepted] = None
        self.last_timescale: Optional[Timescale] = None
        self._bad_before = 0
        self._round_trips: Deque[int] = deque(maxlen=REPLY_HISTORY)   # T4 - T1 of recent pings

    def serial_ns(self) -> int:
        """A PING's (or PONG's) nominal serialisation on this link at this baud, in ns."""
        return self.frame_bytes * self.link.byte_ns(self.baud)

    def busy_after_write_ns(self) -> int:
        """How long after T1 a frame may still be on its way to the device at most: its USB frame
        and its serialisation (tcdrain does not wait for that on every port: a pty's returns at
        once). A frame written after this never waits behind the one before."""
        return self.serial_ns() + self.link.usb_frame_ns

    def reply_window_ns(self, most_ns: int) -> Optional[tuple[int, int]]:
        """When after a measured PING to watch for its PONG without sleeping, (start, end) in ns
        after T1: from a little before the quickest of the recent round trips to a little after the
        slowest, at most `most_ns` long (None: no history yet, or `most_ns` 0). A reply in the
        window is stamped on arrival, not a scheduler wake-up later (PortLink.send)."""
        if not self._round_trips or most_ns <= 0:
            return None
        start = max(0, min(self._round_trips) - REPLY_WINDOW_SLACK_NS)
        return start, min(max(self._round_trips) + REPLY_WINDOW_SLACK_NS, start + most_ns)

    def nominal_minimums(self) -> tuple[int, int]:
        """(forward, back) at the nominal baud: the frame's serialisation, and on the back leg the
        link's fixed receive delay too, in ns (the estimate's anchors)."""
        serial = self.serial_ns()
        return serial, serial + self.link.fixed_rx_delay_ns(self.frame_bytes, self.baud)

    def line_minimums(self) -> tuple[int, int]:
        """(forward, back): the least time the link takes from T1 to T2 and from T3 to T4, in ns
        (the nominal ones shortened by the baud tolerance: the bound's)."""
        out, back = self.nominal_minimums()
        keep = max(0.0, 1.0 - self.baud_tolerance)
        return int(out * keep), int(back * keep)

    def set_link(self, link: links.LinkProfile, baud: int) -> None:
        """The port reopened on another kind of link (a by-id path now names another adapter): new
        minimum delays from now on (the device answers the HELLO of `opened()` with a fresh fit)."""
        self.link, self.baud = link, baud
        self.min_out_ns, self.min_back_ns = self.line_minimums()

    def _new_fit(self, tick_hz: int) -> FeasibleFit:
        out, back = self.nominal_minimums()
        return FeasibleFit(tick_hz, self.min_out_ns, self.min_back_ns, wander_ppb=self.wander_ppb,
                           horizon_ns=max(1, self.ping_interval_ns), anchor=self.link.anchor,
                           anchor_out_ns=out, usb_frame_ns=self.link.usb_frame_ns, anchor_back_ns=back)

    # -- events from the port -------------------------------------------------------------------
    def opened(self) -> list[bytes]:
        """The port (re)opened: start over, ask the device who it is."""
        self.connected = True
        self._bad_before += self.decoder_bad()
        self.decoder = self.codec.new_decoder()
        self._pending.clear()
        return [self._next_frame(self.codec.encode_hello_request)]

    def closed(self) -> None:
        self.connected = False
        self._pending.clear()

    def decoder_bad(self) -> int:
        return int(self.decoder.bad_frames)

    @property
    def bad_frames(self) -> int:
        """Frames dropped: bad CRC, bad COBS, unknown type, garbage between frames."""
        return self._bad_before + self.decoder_bad()

    def received(self, data: bytes, t4_raw: int) -> list[Accepted]:
        """Bytes from the port with their arrival stamp; returns the pings this completed."""
        done: list[Accepted] = []
        for frame in self.decoder.feed(data):
            event = self.codec.to_event(frame)
            self._last_seen_raw = t4_raw
            if isinstance(event, HelloEvent):
                self._on_hello(event)
            elif isinstance(event, PongEvent):
                acc = self._on_pong(event, t4_raw)
                if acc is not None:
                    done.append(acc)
        return done

    def sent(self, seq: int, t1_raw: int) -> Optional[Accepted]:
        """A ping left the port at `t1_raw`; completes it if the reply was already in."""
        p = self._pending.get(seq)
        if p is None or p.warmup:
            return None
        p.t1_raw = t1_raw
        if p.reply is not None:
            t2, t3, t4 = p.reply
            del self._pending[seq]
            return self._complete(t1_raw, t2, t3, t4)
        return None

    def _on_hello(self, h: HelloEvent) -> None:
        if h.tick_hz <= 0:
            self._bad_before += 1   # a HELLO with no tick rate cannot be served: dropped, counted
            return
        # A HELLO is the device (re)starting: its tick counter starts again, the fit is void.
        if self.hello is not None:
            self.resets += 1
        self._start_over(h)

    def _start_over(self, hello: Optional[HelloEvent]) -> None:
        """The device (re)started: a new fit for `hello`, or none until it says who it is."""
        self.hello = hello
        self.fit = None if hello is None else self._new_fit(hello.tick_hz)
        self._pending.clear()
        self._last_t2 = None

    def _on_pong(self, e: PongEvent, t4_raw: int) -> Optional[Accepted]:
        p = self._pending.get(e.seq)
        if p is None or self.fit is None:
            return None
        # Ticks went back without a HELLO (a reset whose HELLO we missed: a frame the reset cut
        # short swallows the HELLO after it, and a device that is pinged stops repeating it): the
        # device restarted, perhaps as another device or at another tick rate. Ask who it is again
        # (the next ping is a HELLO request). T2 against the previous T2, not T3: an ISR stamps a
        # PING's T2 on arrival, which may be before the main loop stamped the previous PONG's T3
        # (PROTOCOL.md).
        if self._last_t2 is not None and e.t2_ticks < self._last_t2:
            self.resets += 1
            self._start_over(None)
            self.last_timescale = None
            return None
        self._last_t2 = e.t2_ticks
        self.pongs += 1
        if p.warmup:
            del self._pending[e.seq]
            return None
        if p.t1_raw is None:
            p.reply = (e.t2_ticks, e.t3_ticks, t4_raw)
            return None
        del self._pending[e.seq]
        return self._complete(p.t1_raw, e.t2_ticks, e.t3_ticks, t4_raw)

    def _complete(self, t1: int, t2: int, t3: int, t4: int) -> Optional[Accepted]:
        assert self.fit is not None
        self._round_trips.append(t4 - t1)
        self.fit.read_latency_ns = self.read_latency_ns
        r = self.fit.add(PingSample(t1, t2, t3, t4))
        if not r.accepted:
            return None
        self.last = Accepted(t4, r.residual_ns, r.line_delay_ns, self.bound_ns(t4))
        return self.last

    # -- what to send -------------------------------------------------------------------------
    def _next_frame(self, encode: Any, *args: Any) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        return bytes(encode(self._seq, *args))

    def make_ping(self, now_raw: int, warmup: bool = False) -> Optional[tuple[int, bytes]]:
        """The next ping (seq, frame); before the handshake, a repeated HELLO request.

        A `warmup` ping is answered by the device like any other, but its answer is not measured."""
        for seq, p in list(self._pending.items()):
            if now_raw - p.sent_at_raw > self.ping_timeout_ns:
                del self._pending[seq]
        if self.hello is None:
            # No HELLO yet: ask again (the device may have been booting, or the request was lost).
            return self._seq + 1, self._next_frame(self.codec.encode_hello_request)
        frame = self._next_frame(self.codec.encode_ping)
        self._pending[self._seq] = _Pending(self._seq, sent_at_raw=now_raw, warmup=warmup)
        self.pings_sent += 1
        return self._seq, frame

    def timescale(self, now_raw: int) -> Optional[Timescale]:
        """The timescale to serve now, or None while the fit or the model is not ready."""
        fit = self.fit
        if fit is None or not fit.ready:
            return None
        t0 = fit.ticks_at(now_raw)
        utc0 = self.model.utc_ns(now_raw)
        utc1 = self.model.utc_ns(now_raw + NS_PER_S)
        k = fit.ticks_per_raw_ns
        # The region's spread is convex in time: its largest over the interval is at one end.
        now_bound, next_bound = self.bound_ns(now_raw), self.bound_ns(now_raw + self.ping_interval_ns)
        bound = None if now_bound is None or next_bound is None else max(now_bound, next_bound)
        if t0 is None or utc0 is None or utc1 is None or not k or bound is None:
            return None
        ns_per_tick = (utc1 - utc0) / NS_PER_S / k
        synced = self.model.state(now_raw) == "synchronised"
        return Timescale(t0, utc0, ns_per_tick, bound, self.model.leap(), synced)

    def source_ppm(self, ts: Timescale) -> float:
        """How far `ts` runs from the device's nominal tick rate, in ppm."""
        assert self.hello is not None
        return (ts.ns_per_tick * self.hello.tick_hz / NS_PER_S - 1.0) * 1e6

    def make_timescale(self, now_raw: int) -> Optional[bytes]:
        """The TIMESCALE frame to send now; None while there is none, or while the time source
        runs further from the device's ticks than the device accepts (a wall clock being stepped
        or slewed hard under `--source system`): sending it would only be refused."""
        ts = self.timescale(now_raw)
        if ts is None:
            return None
        ppm = self.source_ppm(ts)
        if abs(ppm) > self.codec.rate_tolerance_ppm:
            self.withheld_ppm = ppm
            self.timescales_withheld += 1
            return None
        self.withheld_ppm = None
        self.last_timescale = ts
        self.timescales_sent += 1
        return self._next_frame(self.codec.encode_timescale, ts)

    def bound_ns(self, raw: int) -> Optional[int]:
        """Engine bound + line bound at raw instant `raw`."""
        if self.fit is None:
            return None
        line = self.fit.bound_ns(raw)
        engine = self.model.error_bound_ns(raw)
        if line is None or engine is None:
            return None
        return engine + line

    # -- status ----------------------------------------------------------------------------------
    def state(self, now_raw: int) -> str:
        if not self.connected:
            return "disconnected"
        if self.hello is None:
            return "handshake"
        if self._last_seen_raw is not None and now_raw - self._last_seen_raw > self.lost_after_ns:
            return "silent"
        if self.fit is None or not self.fit.ready:
            return "tracking"
        if self.last_timescale is None or self.withheld_ppm is not None:
            return "unsynchronised"
        return self.model.state(now_raw)

    def status(self, now_raw: int) -> DeviceStatus:
        h = self.hello
        age = None if self._last_seen_raw is None else round((now_raw - self._last_seen_raw) / 1e9, 3)
        last = self.last
        fit = self.fit
        return DeviceStatus(
            device=None if h is None else f"0x{h.device_id:08x}", port=self.port,
            state=self.state(now_raw), firmware=None if h is None else h.firmware,
            residual_ns=None if last is None else last.residual_ns,
            line_delay_ns=None if last is None else last.line_delay_ns,
            bound_ns=self.bound_ns(now_raw), last_seen_age_s=age, bad_frames=self.bad_frames,
            link=self.link.name,
            fit_points=None if fit is None else fit.points,
            fit_width_ns=None if fit is None else fit.width_ns,
            fit_empty_resets=None if fit is None else fit.empty_resets,
            fit_rejected=None if fit is None else fit.rejected + fit.conflicts,
            source_ppm=None if self.withheld_ppm is None else round(self.withheld_ppm, 1),
        )


WARMUP_GAP_S = 0.002   # a measured ping follows its warm-up ping by this much (see DeviceDriver)

