"""The bridge's session through a line model in simulated time, sans-IO: what the estimator reaches
on each link when the host and the device add only what a platform preset says.

The real pieces, without I/O or clocks: the bridge's `DeviceSession` (fit, anchor, timescales, the
driver's ping schedule with its warm-up ping and USB dither), the line model's `LinkModel`
(`tsq.testing.seriallink`: frames, latency timer, receive timeouts, serialisation) and a device
that stamps T2 on the PING's delimiter and T3 just before its PONG's first byte, as the firmware
does (firmware-bridge/PROTOCOL.md), with a crystal `drift_ppm` off. Every delay outside the line
model is the `Platform`'s, each leg split where the line model sits (before it / after it). The
truth is exact, so the errors are the estimator's and the line's alone. `benchmarks/bridge_sim.py`
prints them per link; tests use `simulate` for figures a real-time run could not pin down.

Presets (`PLATFORMS`):
  ideal   nothing: the line model alone
  pi      a Raspberry Pi-class host and an MCU: the kernel's write path to the adapter 15 µs + ~10 µs,
          the read path back 25 µs + ~20 µs, the MCU's RX interrupt 2 µs, its main loop answering
          20 µs + ~10 µs, the USB controller's frame clock 50 ppm off the host's (its own crystal)
          (assumptions, not measurements: no real adapter here)
  vm-pty  what `benchmarks/bridge.py`'s ptys add on this VM: ~35 µs + ~30 µs per pty hop, two hops
          per leg (bridge -> line model -> device and back), the device polling (spinning), and 2 %
          of the bridge's reads and writes held up 0.3-3 ms (the VM's scheduler stalls)
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from tsq.bridge import frames
from tsq.bridge.device import WARMUP_GAP_S, DeviceSession
from tsq.bridge.links import PROFILES
from tsq.bridge.port import QUIET_AFTER_WRITE_NS
from tsq.testing.seriallink import LinkModel
from tsq.testing.timemodels import FixedModel

NS = 1_000_000_000
UTC_MINUS_RAW = NS   # FixedModel: UTC = raw + 1 s; the gateway's raw clock is true time here


@dataclass(frozen=True)
class Delay:
    """base + an exponential part with mean `jitter` (µs)."""

    base_us: float = 0.0
    jitter_us: float = 0.0

    def draw(self, rng: random.Random) -> int:
        j = rng.expovariate(1.0 / self.jitter_us) if self.jitter_us > 0 else 0.0
        return round((self.base_us + j) * 1000)


@dataclass(frozen=True)
class Platform:
    out_pre: Delay = Delay()     # T1 -> the line model has the PING (host write path)
    out_post: Delay = Delay()    # the line releases a byte -> the device stamps it (RX interrupt)
    turnaround: Delay = Delay()  # the PING's last byte -> T3 (the device's main loop answers)
    back_pre: Delay = Delay()    # T3 -> the line model has the PONG's bytes
    back_post: Delay = Delay()   # the line releases to the host -> T4 (host read path)
    sof_ppm: float = 0.0         # the USB frame clock's crystal against the host's (either sign)
    stall: float = 0.0           # share of host reads and writes the scheduler holds back ...
    stall_us: Tuple[float, float] = (300.0, 3000.0)   # ... by this much (uniform), as a VM does


PLATFORMS: Dict[str, Platform] = {
    "ideal": Platform(),
    "pi": Platform(out_pre=Delay(15, 10), out_post=Delay(2, 0), turnaround=Delay(20, 10),
                   back_pre=Delay(1, 0), back_post=Delay(25, 20), sof_ppm=50.0),
    "vm-pty": Platform(out_pre=Delay(35, 30), out_post=Delay(35, 30), turnaround=Delay(5, 5),
                       back_pre=Delay(35, 30), back_post=Delay(35, 30), stall=0.02),
}


class Device:
    """The firmware's timing: ticks of a crystal `drift_ppm` off, T2 on a PING's delimiter (stamped in
    the RX interrupt), T3 just before the PONG's first byte, a TIMESCALE in force from its arrival."""

    def __init__(self, tick_hz: int, drift_ppm: float, boot_ns: int) -> None:
        self.tick_hz = tick_hz
        self.rate = tick_hz * (1 + drift_ppm * 1e-6) / NS
        self.boot_ns = boot_ns
        self.decoder = frames.StreamDecoder()
        self.timescale: Optional[frames.TimescaleMsg] = None

    def ticks(self, t: int) -> int:
        return int((t - self.boot_ns) * self.rate)

    def utc(self, t: int) -> Optional[int]:
        return None if self.timescale is None else frames.apply_timescale(self.timescale, self.ticks(t))


def simulate(link: str, platform: Platform, seconds: int, warmup: int, seed: int,
             drift_ppm: float = 50.0, tick_hz: int = 1_000_000, ping_interval_s: float = 1.0,
             baud: int = 115200) -> Dict[str, Any]:
    rng = random.Random(seed)
    prof = PROFILES[link]
    model = LinkModel(prof, baud, frame_phase_ns=rng.randrange(NS // 1000),
                      timer_phase_ns=rng.randrange(max(1, prof.latency_timer_ns or 1)),
                      frame_ppm=platform.sof_ppm * rng.choice((-1, 1)))
    session = DeviceSession(f"sim-{link}", FixedModel(offset_ns=UTC_MINUS_RAW), link=prof, baud=baud,
                            ping_interval_ns=round(ping_interval_s * NS))
    dev = Device(tick_hz, drift_ppm, boot_ns=-rng.randrange(10 * NS))
    events: List[Tuple[int, int, str, Any]] = []
    counter = [0]

    def at(t: int, kind: str, data: Any = None) -> None:
        counter[0] += 1
        heapq.heappush(events, (t, counter[0], kind, data))

    line_due: set[int] = set()

    def dither() -> int:   # DeviceDriver._dither_s
        return rng.randrange(prof.usb_frame_ns) if prof.usb_frame_ns else 0

    def line(t: int) -> None:   # one "line" event per instant, however many asked for it
        if t < (1 << 62) and t not in line_due:
            line_due.add(t)
            at(t, "line")

    def stalled() -> int:
        if platform.stall and rng.random() < platform.stall:
            return round(rng.uniform(*platform.stall_us) * 1000)
        return 0

    def to_device(t: int, data: bytes) -> None:
        model.to_device(t + platform.out_pre.draw(rng) + stalled(), data)
        line(model.next_release_ns())

    def device_frame(t: int, msg: frames.Message, t2_ns: int) -> None:
        if isinstance(msg, frames.HelloRequest):
            reply = frames.encode(frames.Hello(0, 0xBEEF, (1, 0, 0), 1, tick_hz, 0))
            at(t + platform.turnaround.draw(rng), "device_tx", reply)
        elif isinstance(msg, frames.Ping):
            t3 = t + platform.turnaround.draw(rng)
            at(t3, "device_tx", frames.encode(frames.Pong(msg.seq, dev.ticks(t2_ns), dev.ticks(t3))))
        elif isinstance(msg, frames.TimescaleMsg):
            dev.timescale = msg

    # The bridge opens the port and asks who is there (DeviceSession.opened).
    for frame in session.opened():
        to_device(0, frame)
    at(0, "ping")
    at(NS, "truth")
    end = (warmup + seconds) * NS
    rows: List[Tuple[int, int, int]] = []   # (second, |error| ns, bound ns)
    first_synced: Optional[float] = None
    while events:
        t, _, kind, data = heapq.heappop(events)
        if t > end:
            break
        if kind == "ping":
            # DeviceDriver.run: a warm-up ping, WARMUP_GAP_S later the measured one; the next
            # ping an interval plus a random part of a USB frame later.
            at(t + round(ping_interval_s * NS) + dither(), "ping")
            if session.hello is None:
                p = session.make_ping(t)
                if p is not None:
                    to_device(t, p[1])
                continue
            warm = session.make_ping(t, warmup=True)
            if warm is not None:
                to_device(t, warm[1])
            # DeviceDriver.run: PortLink.send returns after tcdrain and the port's quiet time; the
            # driver then waits until the warm-up PING has surely left the line (a frame and its
            # serialisation: a pty's tcdrain does not wait for that), then the gap and its dither.
            out = max(model.drained_at(t), t + QUIET_AFTER_WRITE_NS, t + session.busy_after_write_ns())
            at(out + round(WARMUP_GAP_S * NS) + dither(), "measured")
        elif kind == "measured":
            p = session.make_ping(t)
            if p is not None:
                to_device(t, p[1])
                acc = session.sent(p[0], t)
                if acc is not None:
                    _answer(session, t, to_device)
        elif kind == "line":
            line_due.discard(t)
            for due, chunk in model.due_to_device(t):
                ts = due + platform.out_post.draw(rng)
                at(ts, "device_rx", chunk)
            for due, chunk in model.due_to_host(t):
                at(due + platform.back_post.draw(rng) + stalled(), "host_rx", chunk)
            line(max(model.next_release_ns(), t + 1))
        elif kind == "device_rx":
            for msg in dev.decoder.feed(data):   # T2: the tick stamped on the delimiter
                device_frame(t, msg, t)
        elif kind == "device_tx":
            model.to_host(t + platform.back_pre.draw(rng), data)
            line(model.next_release_ns())
        elif kind == "host_rx":
            if session.received(data, t):
                _answer(session, t, to_device)
        elif kind == "truth":
            at(t + NS, "truth")
            utc = dev.utc(t)
            if utc is None or session.last_timescale is None or session.state(t) != "synchronised":
                continue
            if first_synced is None:
                first_synced = t / NS
            if warmup * NS < t <= end:
                rows.append((t // NS, abs(utc - (t + UTC_MINUS_RAW)), dev.timescale.bound_ns
                             if dev.timescale is not None else 0))
    errs = sorted(e for _, e, _ in rows)
    return {
        "rows": len(rows), "expected": seconds,
        "p50": _q(errs, 0.5), "p99": _q(errs, 0.99), "max": errs[-1] if errs else float("nan"),
        "inside": sum(e <= b for _, e, b in rows) / len(rows) if rows else float("nan"),
        "bound_p50": _q(sorted(b for _, _, b in rows), 0.5),
        "first_synced": first_synced if first_synced is not None else float("nan"),
    }


def _answer(session: DeviceSession, t: int, write: Callable[[int, bytes], None]) -> None:
    frame = session.make_timescale(t)   # DeviceDriver._accepted: a TIMESCALE after each ping
    if frame is not None:
        write(t, frame)


def _q(xs: List[int], q: float) -> float:
    if not xs:
        return float("nan")
    return float(xs[min(len(xs) - 1, int(q * len(xs)))])


