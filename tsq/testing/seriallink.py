"""Serial line models between two pseudo-terminals: USB-serial adapters and native UARTs.

As `tsq.testing.relay` is for QUIC's UDP paths: a device (the firmware host build, a stand-in)
opens one pty, the bridge opens the other, and the bytes between them are delayed as the modelled
link would delay them. The rules and constants are the profiles of `tsq.bridge.links`:

device -> host
  1. serialisation at the baud (10 bits a byte, when the profile serialises): byte k reaches the
     chip (or the UART's RX FIFO) one byte time after the previous one finished, or after it was
     written;
  2. USB adapters collect bytes in the chip and flush a packet when `packet_bytes` wait, or
     - FTDI: when the latency timer expires. Per AN232B-04 the timer restarts on every packet the
       chip sends, and an idle chip sends a status-only packet each time it expires, so the timer
       runs freely with a random phase: a short frame waits 0..L for it (`timer_from_first_byte`
       models a chip whose timer starts at the first byte of a partial packet instead: L exactly);
     - CH340, CP210x: after `rx_timeout_bits` of silence since the last byte;
     CDC-ACM: what the device wrote is ready at once;
     a ready packet goes to the host at the next 1 ms USB frame boundary (one packet per frame; the
     frame clock has a random phase per link);
  3. native UARTs hand the FIFO to the host when it holds `rx_trigger_bytes`, or for a partial
     fill `rx_timeout_bits` after the last byte arrived;
host -> device
  USB: whatever the host wrote waits for the next frame (one packet a frame), then is serialised
  at the baud (not on CDC-ACM); UART: serialised from the write; pty: at once.

`LinkModel` is that, sans-IO (bytes in with the time they were read, bytes out with the time they
are due). `SerialLink` runs two of them between two pty pairs in one loop that sleeps in select(2)
until `SPIN_NS` before the next release and spins the rest; it is meant to run in its own process:

    python -m tsq.testing.seriallink --link ftdi-low --baud 115200
    device /dev/pts/5        (the device's port: a firmware host build opens it with --tty)
    host /dev/pts/6          (the bridge's port)

and prints its own release-time error (written minus due, p50/p99/max) on exit; `LineProcess`
starts and stops it as a context manager. `--device PATH` opens an existing tty as the device side
instead (e.g. the pty a `tsqb-posix --link PATH` made itself).

The bytes a side writes are stamped when the loop reads them. Asleep in select() the loop reads
them late by the scheduler's wake-up (tens of µs on an idle VM), so after any traffic it stays
awake (polls without sleeping) for `awake_ms`: a bridge's measured ping follows its warm-up ping by
2 ms, and a device answers at once, so both are read as they are written. Beside a device stand-in
that never sleeps on a 2-core machine that spinning competes for a CPU (CFS then takes it away for
milliseconds); `--realtime --awake-ms 0` (SCHED_FIFO, which wakes at once and must not spin long)
is what `benchmarks/bridge.py --line-realtime` uses. Measured release error (written minus due),
2026-12-02 on the 2-core VM, pings of 20/30 bytes: ftdi-low p50 1.5 µs, p99 10.5 µs; pl011 p99
41.5 µs (per-byte releases 87 µs apart); without real-time priority and beside a spinning device,
p99 ~4 ms.

Memory is bounded: a side is not read while `MAX_QUEUE` of its bytes wait (the writer blocks, as a
device's write waits for its UART); bytes the other side does not take (its input buffer full, as
when nothing reads the port) are dropped and counted, as an adapter overruns.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import gc
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
import tty
from typing import Deque, Dict, List, Optional, Tuple

from tsq.bridge.links import PROFILES, LinkProfile, profile

INF = 1 << 62
SPIN_NS = 400_000          # sleep until this long before a release, then spin (a VM wakes ~50-250 µs late)
TIGHT_NS = 30_000          # this close, spin on the clock alone (no syscalls)
MAX_QUEUE = 4096           # bytes waiting in one direction before its writer is no longer read
HIST_US = 20_000           # release-error histogram: 1 µs bins up to 20 ms (then "overflow")


def _out_packet_bytes(p: LinkProfile) -> int:
    # FTDI's IN packets carry 2 modem-status bytes (packet_bytes is the data part); OUT packets do not.
    return p.packet_bytes + 2 if p.latency_timer_ns else p.packet_bytes


class LinkModel:
    """One link's timing, both directions, sans-IO: `to_host`/`to_device` take bytes with the ns they
    were written, `due_*` give back what is due by a time, `next_release_ns` says when to look next."""

    def __init__(self, prof: LinkProfile, baud: int = 115200, *, frame_phase_ns: int = 0,
                 timer_phase_ns: int = 0, timer_from_first_byte: bool = False,
                 frame_ppm: float = 0.0) -> None:
        self.profile = prof
        self.baud = baud
        self.byte_ns = prof.byte_ns(baud)
        self.rx_timeout_ns = prof.rx_timeout_ns(baud)
        self.frame_ns = prof.usb_frame_ns
        self.frame_phase_ns = frame_phase_ns % self.frame_ns if self.frame_ns else 0
        # The host controller's frame clock runs off its own crystal: `frame_ppm` off the clock the
        # model is driven by (the host's), so the grid's phase drifts against it.
        self.frame_period = self.frame_ns * (1 + frame_ppm * 1e-6)
        self.timer_from_first_byte = timer_from_first_byte
        # device -> host
        self._wire: Deque[Tuple[int, int]] = collections.deque()  # (arrival at chip/FIFO, byte)
        self._wire_free = -INF            # when the device's transmitter is free again
        self._buf = bytearray()           # the chip's buffer or the UART's RX FIFO
        self._buf_first = 0
        self._buf_last = 0
        self._timer_base = timer_phase_ns  # FTDI: the latency timer's last restart
        self._in_frame = -INF             # the last frame boundary given an IN packet
        self._up: Deque[Tuple[int, bytes]] = collections.deque()   # (due, bytes) to the host
        # host -> device
        self._out_frame = -INF
        self._out_free = -INF
        self._down: Deque[Tuple[int, bytes]] = collections.deque()  # (due, bytes) to the device

    # -- frames --------------------------------------------------------------------------------
    def frame_after(self, t: int, last: int) -> int:
        """The first frame boundary after `t` and after the frame `last` (one packet a frame)."""
        f, ph = self.frame_period, self.frame_phase_ns
        k = -(-(t - ph) // f)
        b = round(ph + k * f)
        if b <= t:
            b = round(ph + (k + 1) * f)
        return max(b, round(last + f))

    # -- device -> host ------------------------------------------------------------------------
    @property
    def queued_to_host(self) -> int:
        return len(self._wire) + len(self._buf) + sum(len(d) for _, d in self._up)

    def to_host(self, now: int, data: bytes) -> None:
        """The device wrote `data` at `now`."""
        p = self.profile
        if p.kind == "pty":
            self._up.append((now, bytes(data)))
            return
        if p.kind == "usb" and not p.serialises:  # CDC-ACM: in the endpoint at once
            for i in range(0, len(data), p.packet_bytes):
                self._in_frame = self.frame_after(now, self._in_frame)
                self._up.append((self._in_frame, bytes(data[i:i + p.packet_bytes])))
            return
        t = max(now, self._wire_free)
        for b in data:
            t += self.byte_ns
            self._wire.append((t, b))
        self._wire_free = t

    def _timer_deadline(self) -> int:
        p = self.profile
        if not self._buf:
            return INF
        if p.latency_timer_ns:
            period = p.latency_timer_ns
            if self.timer_from_first_byte:
                return self._buf_first + period
            # free-running: the first tick at or after the first byte of the partial packet
            base = self._timer_base
            return base + max(0, -(-(self._buf_first - base) // period)) * period
        if p.rx_timeout_bits:
            return self._buf_last + self.rx_timeout_ns
        return INF

    def _flush(self, t: int) -> None:
        if self.profile.kind == "usb":
            self._in_frame = self.frame_after(t, self._in_frame)
            self._up.append((self._in_frame, bytes(self._buf)))
            self._timer_base = t   # AN232B-04: the latency timer restarts on each packet sent
        else:
            self._up.append((t, bytes(self._buf)))
        self._buf.clear()

    def advance(self, now: int) -> None:
        """Run the chip/FIFO rules over everything that happened by `now`."""
        p = self.profile
        cap = p.packet_bytes if p.kind == "usb" else (p.rx_trigger_bytes or 1)
        while True:
            t_arr = self._wire[0][0] if self._wire else INF
            t_tmr = self._timer_deadline()
            if min(t_arr, t_tmr) > now:
                return
            if t_tmr < t_arr:
                self._flush(t_tmr)
                continue
            t, b = self._wire.popleft()
            if not self._buf:
                self._buf_first = t
            self._buf.append(b)
            self._buf_last = t
            if len(self._buf) >= cap:
                self._flush(t)

    def due_to_host(self, now: int) -> List[Tuple[int, bytes]]:
        """(due, bytes) for the host whose time has come by `now`, in order."""
        self.advance(now)
        out = []
        while self._up and self._up[0][0] <= now:
            out.append(self._up.popleft())
        return out

    # -- host -> device ------------------------------------------------------------------------
    @property
    def queued_to_device(self) -> int:
        return sum(len(d) for _, d in self._down)

    def to_device(self, now: int, data: bytes) -> None:
        """The host wrote `data` at `now`."""
        p = self.profile
        if p.kind == "pty":
            self._down.append((now, bytes(data)))
            return
        starts: List[Tuple[int, bytes]] = []
        if p.kind == "usb":
            size = _out_packet_bytes(p)
            for i in range(0, len(data), size):
                self._out_frame = self.frame_after(now, self._out_frame)
                starts.append((self._out_frame, bytes(data[i:i + size])))
        else:
            starts.append((now, bytes(data)))
        if not p.serialises:
            self._down.extend(starts)
            return
        for start, chunk in starts:
            t = max(start, self._out_free)
            for b in chunk:   # each byte reaches the device when its stop bit is in
                t += self.byte_ns
                self._down.append((t, bytes((b,))))
            self._out_free = t

    def drained_at(self, now: int) -> int:
        """When everything written towards the device by `now` will have reached it (what a
        writer's tcdrain waits for, at the latest)."""
        return max([now] + [due for due, _ in self._down])

    def due_to_device(self, now: int) -> List[Tuple[int, bytes]]:
        out = []
        while self._down and self._down[0][0] <= now:
            out.append(self._down.popleft())
        return out

    def next_release_ns(self) -> int:
        """The next instant something may be due (a release, or a chip/FIFO event that may cause one)."""
        t = min(self._up[0][0] if self._up else INF, self._down[0][0] if self._down else INF,
                self._wire[0][0] if self._wire else INF, self._timer_deadline())
        return t


class ReleaseStats:
    """Actual-minus-due of every release, as a bounded histogram (1 µs bins)."""

    def __init__(self) -> None:
        self.bins = [0] * (HIST_US + 1)
        self.count = 0
        self.max_ns = 0

    def add(self, err_ns: int) -> None:
        err_ns = max(0, err_ns)
        self.bins[min(HIST_US, err_ns // 1000)] += 1
        self.count += 1
        self.max_ns = max(self.max_ns, err_ns)

    def quantile_us(self, q: float) -> float:
        if not self.count:
            return float("nan")
        rank, seen = q * (self.count - 1), 0
        for i, n in enumerate(self.bins):
            seen += n
            if seen > rank:
                return i + 0.5
        return float(HIST_US)

    def summary(self) -> Dict[str, float]:
        return {"releases": self.count, "p50_us": self.quantile_us(0.5), "p99_us": self.quantile_us(0.99),
                "max_us": self.max_ns / 1000}


def _open_pty() -> Tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)   # no echo or line editing before anyone configures the port
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class SerialLink:
    """Two pty pairs and the loop that carries bytes between their masters through a `LinkModel`."""

    def __init__(self, link: str = "pty", baud: int = 115200, *, device: Optional[str] = None,
                 seed: Optional[int] = None, awake_ms: float = 5.0,
                 timer_from_first_byte: bool = False) -> None:
        prof = profile(link)
        rng = random.Random(seed)
        self.model = LinkModel(prof, baud, frame_phase_ns=rng.randrange(1_000_000),
                               timer_phase_ns=rng.randrange(max(1, prof.latency_timer_ns)),
                               timer_from_first_byte=timer_from_first_byte)
        self.awake_ns = int(awake_ms * 1e6)
        self.stats = ReleaseStats()
        self.dropped = 0
        self._device_given = device
        self._dev_keep = -1
        if device is None:
            self._dev, self._dev_keep, self.device_path = _open_pty()
        else:
            self._dev, self.device_path = -1, device
            self._open_device()
        # Our own slave fds stay open: a side that closes its port (a bridge restarting) leaves the
        # pty in place, and writes to its master do not fail with EIO meanwhile.
        self._host, self._host_keep, self.host_path = _open_pty()
        self._stop = False

    def _open_device(self) -> None:
        try:
            fd = os.open(self._device_given or "", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            self._dev = -1
            return
        with contextlib.suppress(Exception):
            tty.setraw(fd)
        self._dev = fd

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        for fd in (self._dev, self._dev_keep, self._host, self._host_keep):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._dev = self._dev_keep = self._host = self._host_keep = -1

    def _write(self, fd: int, due: int, data: bytes) -> None:
        self.stats.add(time.monotonic_ns() - due)
        if fd < 0:
            self.dropped += len(data)
            return
        try:
            n = os.write(fd, data)
        except (BlockingIOError, OSError):
            n = 0
        self.dropped += len(data) - n

    def _read(self, fd: int) -> Optional[bytes]:
        """What is there (b"" for nothing), or None when the tty is gone (EIO, hang-up)."""
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENXIO, errno.EBADF):
                return None
            raise
        return data or None

    def run(self, until_ns: Optional[int] = None) -> None:
        """Relay until `stop()` (or a signal handler calling it), or until `until_ns`."""
        model, clock = self.model, time.monotonic_ns
        # select(2) sleeps to the µs; epoll and poll round a timeout up to whole milliseconds
        sel = selectors.SelectSelector()
        registered: Dict[int, bool] = {}
        awake_until = 0
        next_reopen = 0
        while not self._stop:
            now = clock()
            if until_ns is not None and now >= until_ns:
                break
            if self._dev < 0 and self._device_given and now >= next_reopen:
                self._open_device()
                next_reopen = now + 50_000_000
            # who may be read: not while MAX_QUEUE of its bytes wait (bounded memory)
            want = {self._dev: self._dev >= 0 and model.queued_to_host < MAX_QUEUE,
                    self._host: model.queued_to_device < MAX_QUEUE}
            for fd, on in want.items():
                if fd >= 0 and on != registered.get(fd, False):
                    if on:
                        sel.register(fd, selectors.EVENT_READ)
                    else:
                        sel.unregister(fd)
                    registered[fd] = on
            left = model.next_release_ns() - now
            if 0 < left <= TIGHT_NS:
                while clock() < now + left:
                    pass
            elif left > 0:
                timeout = 0.0 if now < awake_until or left <= SPIN_NS else min(0.1, (left - SPIN_NS) / 1e9)
                if until_ns is not None:
                    timeout = min(timeout, max(0.0, (until_ns - now) / 1e9))
                for key, _ in sel.select(timeout):
                    stamp = clock()
                    fd = int(key.fd)
                    data = self._read(fd)
                    if data is None and fd == self._dev and self._device_given:
                        # the device's tty went away (a replug): reopen it
                        sel.unregister(fd)
                        registered.pop(fd, None)
                        os.close(fd)
                        self._dev = -1
                        continue
                    if not data:
                        continue
                    awake_until = stamp + self.awake_ns
                    if fd == self._host:
                        model.to_device(stamp, data)
                    else:
                        model.to_host(stamp, data)
            now = clock()
            for due, data in model.due_to_host(now):
                self._write(self._host, due, data)
                awake_until = now + self.awake_ns
            for due, data in model.due_to_device(now):
                self._write(self._dev, due, data)
                awake_until = now + self.awake_ns
        sel.close()

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineProcess:
    """`python -m tsq.testing.seriallink` in its own process; `device_path`/`host_path` once started,
    `stats` (its release error, bytes dropped) after `stop()`."""

    def __init__(self, link: str, baud: int = 115200, *, device: Optional[str] = None,
                 seed: Optional[int] = None, extra: Tuple[str, ...] = ()) -> None:
        self.link = link
        self.args = [sys.executable, "-m", "tsq.testing.seriallink", "--link", link, "--baud", str(baud),
                     *(["--device", device] if device else []),
                     *(["--seed", str(seed)] if seed is not None else []), *extra]
        self.proc: Optional[subprocess.Popen[str]] = None
        self.device_path = ""
        self.host_path = ""
        self.stats: Dict[str, float] = {}
        self.frame_phase_ns = 0

    def start(self) -> LineProcess:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH"))
                                                          if p))
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, env=env)
        assert self.proc.stdout is not None
        for _ in range(3):
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(5)
                raise RuntimeError(f"seriallink exited ({self.proc.returncode}) before naming its ptys")
            key, _, value = line.strip().partition(" ")
            if key == "device":
                self.device_path = value
            elif key == "host":
                self.host_path = value
            elif key == "frame-phase-ns":
                self.frame_phase_ns = int(value)
        return self

    def stop(self) -> Dict[str, float]:
        if self.proc is None:
            return self.stats
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for line in out.splitlines():
            if line.startswith("stats "):
                self.stats = json.loads(line[6:])
        return self.stats

    def __enter__(self) -> LineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tsq.testing.seriallink", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--link", default="pty", choices=list(PROFILES))
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--device", help="open this tty as the device side instead of making a pty")
    ap.add_argument("--seed", type=int, help="seed of the frame clock's and latency timer's phases")
    ap.add_argument("--awake-ms", type=float, default=5.0,
                    help="poll without sleeping this long after any traffic (default 5)")
    ap.add_argument("--timer-from-first-byte", action="store_true",
                    help="FTDI: start the latency timer at a partial packet's first byte (not free-running)")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument("--realtime", action="store_true",
                    help="run under SCHED_FIFO when allowed (a loaded machine then delays releases less)")
    args = ap.parse_args(argv)
    if args.realtime:
        with contextlib.suppress(AttributeError, OSError, PermissionError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    link = SerialLink(args.link, args.baud, device=args.device, seed=args.seed, awake_ms=args.awake_ms,
                      timer_from_first_byte=args.timer_from_first_byte)

    def on_signal(signum: int, frame: object) -> None:
        link.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"device {link.device_path}\nhost {link.host_path}\nframe-phase-ns {link.model.frame_phase_ns}",
          flush=True)
    gc.disable()   # a collection in the loop would be a release late by milliseconds
    until = None if args.duration is None else time.monotonic_ns() + int(args.duration * 1e9)
    try:
        link.run(until)
    finally:
        link.close()
    summary = dict(link.stats.summary(), dropped=link.dropped, link=args.link)
    print("stats " + json.dumps(summary), flush=True)
    print(f"seriallink {args.link}: {summary['releases']} releases, error p50 {summary['p50_us']:.1f} us "
          f"p99 {summary['p99_us']:.1f} us max {summary['max_us']:.1f} us; {link.dropped} bytes dropped",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
