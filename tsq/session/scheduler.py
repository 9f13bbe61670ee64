"""When to ask one source next (sans-IO): the one policy the daemon and the simulator both run.

    sched = SourceScheduler(name, engine)          # engine.add_source(name) is done here
    due = sched.next_poll(now_raw)                 # raw ns: sleep until then, then poll
    outcome = sched.on_sample(exchange, now_raw)   # a poll gave a sample (engine.on_exchange)
    sched.on_failure(now_raw, connected)           # a poll gave nothing (engine.on_timeout)

The engine's per-source poll controller decides the rhythm while the source answers: a burst at
start (and after it comes back), then an adaptive interval in [minpoll, maxpoll]. Within a poll the
client session retries a lost exchange at once (tsq.session.client). On top of that, this
scheduler backs off while the source cannot even be connected to: after `down_after` failed polls
in a row without a connection, the next attempt waits `backoff_initial_ns` doubling up to
`backoff_max_ns`, each wait randomised by ±`jitter` so that a fleet of gateways does not reconnect
in lock-step after a server restart (no reconnect storm). A lost datagram on a live connection is
routine and never backs off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from tsq.sync.engine import Engine, SampleOutcome
from tsq.sync.exchange import Exchange

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class SchedulerConfig:
    backoff_initial_ns: int = NS_PER_S
    backoff_max_ns: int = 64 * NS_PER_S
    jitter: float = 0.25          # each backoff is drawn from [1 - jitter, 1 + jitter] x nominal
    down_after: int = 2           # failed polls without a connection before backing off


class SourceScheduler:
    """Poll timing of one source: the engine's interval while it answers, jittered backoff while
    it cannot be reached."""

    def __init__(self, name: str, engine: Engine, config: Optional[SchedulerConfig] = None,
                 rng: Optional[random.Random] = None) -> None:
        self.name = name
        self.engine = engine
        self.config = config or SchedulerConfig()
        self._rng = rng or random.Random()
        self.down = 0                         # failed polls in a row without a connection
        self.not_before: Optional[int] = None # raw ns: backing off until then
        self.polls = 0
        self.failures = 0
        engine.add_source(name)

    def next_poll(self, now_raw: int) -> int:
        """Raw ns at which to poll next (<= now_raw: now)."""
        due = self.engine.next_poll(self.name, now_raw)
        if self.not_before is not None and self.not_before > due:
            return self.not_before
        return due

    def backoff_ns(self) -> int:
        """The nominal wait after the current run of failures (0 while not backing off)."""
        cfg = self.config
        if self.down < cfg.down_after:
            return 0
        return min(cfg.backoff_initial_ns << (self.down - cfg.down_after), cfg.backoff_max_ns)

    def on_sample(self, ex: Exchange, now_raw: int) -> SampleOutcome:
        """A poll produced an exchange: the engine checks and filters it."""
        self.polls += 1
        self.down = 0
        self.not_before = None
        return self.engine.on_exchange(ex, now_raw)

    def on_failure(self, now_raw: int, connected: bool) -> int:
        """A poll produced nothing. Returns the backoff chosen (ns, 0 for none)."""
        self.polls += 1
        self.failures += 1
        self.engine.on_timeout(self.name, now_raw)
        self.down = 0 if connected else self.down + 1
        wait = self.backoff_ns()
        if wait <= 0:
            self.not_before = None
            return 0
        j = self.config.jitter
        wait = round(wait * self._rng.uniform(1.0 - j, 1.0 + j))
        self.not_before = now_raw + wait
        return wait

    @property
    def backing_off(self) -> bool:
        return self.down >= self.config.down_after
