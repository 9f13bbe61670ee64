"""Poll control for one source (sans-IO): a burst at start, then an adaptive interval.

Burst: exchanges back to back (`burst_spacing_ns` apart) until `burst_samples` samples were
accepted or `burst_max` exchanges were tried, so the first synchronised estimate comes within
milliseconds. A source that comes back after being unreachable (reach register 0) bursts again.

Then the interval is 2**poll seconds, poll in [minpoll, maxpoll] (log2 seconds, as chrony and NTP).
As NTP does, the interval lengthens when the new samples keep landing where the regression predicted
(prediction error below `gate` x the sample jitter: the frequency error that grew over the interval
is lost in the jitter, so waiting longer costs nothing), after `streak` such samples in a row; it
shortens at once when a sample misses the prediction (a step, wander, or a frequency error that has
become visible), or a sample is an offset spike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class PollConfig:
    minpoll: int = 0                 # log2 s
    maxpoll: int = 6
    burst_samples: int = 4
    burst_max: int = 8
    burst_spacing_ns: int = 0
    gate: float = 4.0                # prediction error / jitter below this: a good sample
    streak: int = 4                  # good samples in a row before the interval doubles


class PollController:
    def __init__(self, config: Optional[PollConfig] = None) -> None:
        self.config = config or PollConfig()
        if self.config.minpoll > self.config.maxpoll:
            raise ValueError(f"minpoll {self.config.minpoll} > maxpoll {self.config.maxpoll}")
        self.poll = self.config.minpoll
        self.bursting = True
        self._burst_tries = 0
        self._burst_accepted = 0
        self._good = 0
        self._last_raw: Optional[int] = None
        self.reach = 0               # 8-bit register, newest poll in bit 0

    @property
    def interval_ns(self) -> int:
        return (1 << self.poll) * NS_PER_S if self.poll >= 0 else NS_PER_S >> -self.poll

    def _start_burst(self) -> None:
        self.bursting = True
        self._burst_tries = 0
        self._burst_accepted = 0

    def _burst_step(self, accepted: bool) -> None:
        self._burst_tries += 1
        self._burst_accepted += int(accepted)
        if (self._burst_accepted >= self.config.burst_samples
                or self._burst_tries >= self.config.burst_max):
            self.bursting = False

    def on_sample(self, now_raw: int, accepted: bool, prediction_error_ns: Optional[float],
                  jitter_ns: float, step: bool = False) -> None:
        """An answer arrived; `prediction_error_ns` is None while there is no prediction yet."""
        if self.reach == 0 and self._last_raw is not None and not self.bursting:
            self._start_burst()
        self.reach = ((self.reach << 1) | 1) & 0xFF
        self._last_raw = now_raw
        if self.bursting:
            self._burst_step(accepted)
            return
        if step or (not accepted and prediction_error_ns is not None):
            self._shorter()                     # offset spike or step
        elif accepted and prediction_error_ns is not None:
            if prediction_error_ns <= self.config.gate * max(jitter_ns, 1.0):
                self._good += 1
                if self._good >= self.config.streak:
                    self._good = 0
                    self.poll = min(self.poll + 1, self.config.maxpoll)
            else:
                self._shorter()

    def _shorter(self) -> None:
        self._good = 0
        self.poll = max(self.poll - 1, self.config.minpoll)

    def on_timeout(self, now_raw: int) -> None:
        self.reach = (self.reach << 1) & 0xFF
        self._last_raw = now_raw
        if self.bursting:
            self._burst_step(False)

    def next_poll(self, now_raw: int) -> int:
        """Raw ns at which to poll next (<= now_raw: poll now)."""
        if self._last_raw is None:
            return now_raw
        if self.bursting:
            return self._last_raw + self.config.burst_spacing_ns
        return self._last_raw + self.interval_ns
