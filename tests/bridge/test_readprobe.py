"""The read-latency probe on a real pty pair: it measures, it says nothing before it has enough,
and it stops."""

from __future__ import annotations

import time

from tsq.bridge import readprobe
from tsq.bridge.readprobe import ReadLatencyProbe


def test_the_probe_measures_a_pty_read_latency_and_stops() -> None:
    probe = ReadLatencyProbe(interval_s=0.005)
    assert probe.latency_ns() is None            # nothing measured yet
    assert probe.start() and probe.start()       # a second start is a no-op
    try:
        deadline = time.monotonic() + 10
        while probe.samples < readprobe.PROBE_MIN_SAMPLES + 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        low, high = probe.latency_ns(0.1), probe.latency_ns(0.9)
    finally:
        probe.stop()
    assert low is not None and high is not None
    # A write and its wake-up: more than nothing, far less than the probe's own interval's worth.
    assert 0 < low <= high < 200_000_000
    assert probe.lost == 0 and probe.error == ""
    count = probe.samples
    time.sleep(0.05)
    assert probe.samples == count                # stopped: no more samples


def test_too_few_samples_give_no_figure() -> None:
    probe = ReadLatencyProbe()
    probe._samples.extend([5_000] * (readprobe.PROBE_MIN_SAMPLES - 1))
    assert probe.latency_ns() is None
    probe._samples.append(-3)                    # a stamp before the write (clock read order): 0
    assert probe.latency_ns(0.0) == 0
