"""How late this host's serial reader wakes: a private pty, one byte at a time (the bridge's I/O edge).

On a USB link the fit reads the frame grid's phase off the T4s (tsq.bridge.feasible): the lower
envelope of "an IN transfer completed, then the reader stamped it". The second part, the tty
layer's work after the adapter's driver hands the bytes on (the flip buffer's work item, the line
discipline) and the reader thread's wake-up from poll(), is one-sided and lands whole in the
estimate: the grid looks that much later than it is, and so does the device (on this VM the USB
links' mean error was −17…−28 µs with it, −10…+9 µs with the reader spinning instead).

The probe measures exactly that part, continuously and without spinning: a thread writes one byte
into a pty of its own every `interval_s` (the raw time read right before the write) and waits for
it on the other side with the reader's own call (`tsq.clock.wait_readable_stamped`, sleeping in
poll()); the difference is one read latency. Like the bridge's measured pings, each measured byte
follows an unmeasured one by `warmup_gap_s` (a reader woken 2 ms before wakes faster than one
asleep for a second: the measured PONG's T4 is of the first kind). What is left in the grid's
phase after subtracting the latencies' low quantile is the adapter's own delay, which nothing on
the host can see.

Stand-in note: a pty's bytes take the same path from the flip buffer on as a USB-serial adapter's
(tty_flip_buffer_push, a kworker, n_tty, the reader's wake-up); the hardware part before it (the
host controller's interrupt, the URB's completion) is not in the probe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import tty
from collections import deque
from typing import Deque, Optional

from tsq import clock
from tsq.bridge.device import WARMUP_GAP_S

log = logging.getLogger("tsq.bridge")

PROBE_INTERVAL_S = 0.25    # 4 a second: a shift in the host's load shows within seconds
PROBE_HISTORY = 64         # the last 16 s at that rate
PROBE_MIN_SAMPLES = 8      # before this many, no figure (the fit then uses none)
PROBE_QUANTILE = 0.1       # the grid's phase is the T4s' 10th percentile (feasible.GRID_EDGE_QUANTILE)
PROBE_TIMEOUT_MS = 200     # a byte not seen by then is not a read latency (counted as lost)


class ReadLatencyProbe:
    """A pty pair and a thread measuring the write-to-stamped-read latency of one byte."""

    def __init__(self, interval_s: float = PROBE_INTERVAL_S, history: int = PROBE_HISTORY,
                 warmup_gap_s: Optional[float] = WARMUP_GAP_S) -> None:
        self.interval_s = interval_s
        self.warmup_gap_s = warmup_gap_s
        self._samples: Deque[int] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.lost = 0
        self.error = ""

    def start(self) -> bool:
        """Open the pty pair and start measuring; False (with `error`) when no pty can be opened."""
        if self._thread is not None:
            return True
        try:
            master, slave = os.openpty()
        except OSError as exc:
            self.error = f"no pty for the read-latency probe: {exc}"
            log.warning("%s", self.error)
            return False
        for fd in (master, slave):
            tty.setraw(fd)
        self._thread = threading.Thread(target=self._run, args=(master, slave), name="tsq-read-probe",
                                        daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2.0)

    def _run(self, master: int, slave: int) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                if self.warmup_gap_s is not None:
                    self._one(master, slave, keep=False)
                    time.sleep(self.warmup_gap_s)
                self._one(master, slave)
        except OSError as exc:  # the pty broke: no more figures, the fit goes on without them
            self.error = f"read-latency probe stopped: {exc}"
            log.warning("%s", self.error)
        finally:
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _one(self, master: int, slave: int, keep: bool = True) -> None:
        sent = clock.raw_ns()
        os.write(master, b"\x55")
        ready, _, stamped = clock.wait_readable_stamped(slave, -1, PROBE_TIMEOUT_MS)
        if not ready:
            self.lost += 1
            return
        os.read(slave, 64)
        if keep:
            with self._lock:
                self._samples.append(stamped - sent)

    def latency_ns(self, quantile: float = PROBE_QUANTILE) -> Optional[int]:
        """The recent read latencies' `quantile`, in ns (None before PROBE_MIN_SAMPLES)."""
        with self._lock:
            samples = sorted(self._samples)
        if len(samples) < PROBE_MIN_SAMPLES:
            return None
        return max(0, samples[int(quantile * (len(samples) - 1))])

    @property
    def samples(self) -> int:
        with self._lock:
            return len(self._samples)
