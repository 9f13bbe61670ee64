"""Bursty delay, as on a cellular (LTE) link: quiet stretches, then seconds of hundreds of ms extra.

    schedule = BurstSchedule(every_s=30.0, length_s=3.0, delay_s=0.2, seed=1)
    extra = schedule.extra_s(t_s)      # 0.0 outside a burst; exponential, mean delay_s, inside one

Bursts start as a Poisson process (mean `every_s` between starts) and last an exponential time
(mean `length_s`); inside one, every packet waits an extra exponential delay of mean `delay_s`
(radio scheduling, retransmissions, a handover). The schedule is a function of time drawn lazily
from its own seeded generator (the edges depend on the seed only, not on the order of the
questions), so a simulation stays deterministic and the relay (tsq.testing.relay) and the
simulator (tsq.testing.simclock.SimPath) share one model. The per-packet draws come from the
caller's generator when one is given (the simulator's), else from the schedule's own.
"""

from __future__ import annotations

import random
from typing import List, Optional, Tuple


class BurstSchedule:
    def __init__(self, every_s: float, length_s: float, delay_s: float, seed: object = 1,
                 start_s: float = 0.0) -> None:
        if every_s <= 0 or length_s <= 0 or delay_s < 0:
            raise ValueError("bursts need every_s > 0, length_s > 0 and delay_s >= 0")
        self.every_s = every_s
        self.length_s = length_s
        self.delay_s = delay_s
        self._edges = random.Random(f"bursts:{seed}")
        self._draws = random.Random(f"burst-delays:{seed}")
        self._bursts: List[Tuple[float, float]] = []     # (start, end), in order
        self._next_start = start_s + self._edges.expovariate(1.0 / every_s)

    def _extend(self, t_s: float) -> None:
        while self._next_start <= t_s:
            start = self._next_start
            end = start + self._edges.expovariate(1.0 / self.length_s)
            self._bursts.append((start, end))
            self._next_start = end + self._edges.expovariate(1.0 / self.every_s)

    def in_burst(self, t_s: float) -> bool:
        self._extend(t_s)
        for start, end in reversed(self._bursts):
            if start <= t_s:
                return t_s < end
        return False

    def extra_s(self, t_s: float, rng: Optional[random.Random] = None) -> float:
        """The extra one-way delay of a packet sent at t_s."""
        if not self.in_burst(t_s) or self.delay_s == 0:
            return 0.0
        return (rng or self._draws).expovariate(1.0 / self.delay_s)
