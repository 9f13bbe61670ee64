"""SourceScheduler: the engine's poll rhythm while a source answers, jittered exponential backoff
while it cannot be connected to, and the reset when it answers again."""

from __future__ import annotations

import random

import pytest

from tsq.session.scheduler import SchedulerConfig, SourceScheduler
from tsq.sync.engine import Engine, SampleOutcome
from tsq.sync.exchange import Exchange

NS = 1_000_000_000
UTC_MINUS_RAW = 1_795_000_000 * NS


def exchange(t1: int, name: str = "a") -> Exchange:
    return Exchange(server=name, mode="datagram", t1_raw=t1, t2_unix=t1 + UTC_MINUS_RAW + 500_000,
                    t3_unix=t1 + UTC_MINUS_RAW + 520_000, t4_raw=t1 + 1_020_000)


def fixed(jitter: float = 0.0, **kw: int) -> SourceScheduler:
    return SourceScheduler("a", Engine(), SchedulerConfig(jitter=jitter, **kw), random.Random(1))


def test_adds_the_source_and_follows_the_engine_while_it_answers() -> None:
    engine = Engine()
    sched = SourceScheduler("a", engine)
    assert "a" in engine.sources
    assert sched.next_poll(100) <= 100                    # the start burst: poll now
    out = sched.on_sample(exchange(100), 2_000_000)
    assert isinstance(out, SampleOutcome) and out.accepted
    assert sched.next_poll(2_000_000) == engine.next_poll("a", 2_000_000)
    assert (sched.polls, sched.failures) == (1, 0)


def test_backoff_grows_from_down_after_and_is_capped() -> None:
    sched = fixed(down_after=2, backoff_initial_ns=NS, backoff_max_ns=8 * NS)
    waits = [sched.on_failure(i * NS, connected=False) for i in range(7)]
    assert waits == [0, NS, 2 * NS, 4 * NS, 8 * NS, 8 * NS, 8 * NS]
    assert sched.backing_off and sched.down == 7 and sched.failures == sched.polls == 7
    assert sched.not_before == 6 * NS + 8 * NS
    assert sched.next_poll(6 * NS) == 14 * NS             # later than the engine would poll


def test_defaults_cap_at_64_s() -> None:
    sched = fixed()
    waits = [sched.on_failure(0, connected=False) for _ in range(12)]
    assert waits[:3] == [0, NS, 2 * NS] and max(waits) == waits[-1] == 64 * NS


def test_a_live_connection_never_backs_off() -> None:
    sched = fixed()
    for i in range(10):
        assert sched.on_failure(i, connected=True) == 0   # a lost datagram is routine
    assert not sched.backing_off and sched.not_before is None


def test_answer_or_connection_resets_the_backoff() -> None:
    sched = fixed()
    for i in range(5):
        sched.on_failure(i, connected=False)
    assert sched.backing_off and sched.not_before is not None
    sched.on_sample(exchange(10 * NS), 10 * NS + 2_000_000)
    assert not sched.backing_off and sched.not_before is None and sched.backoff_ns() == 0
    for i in range(5):
        sched.on_failure(i, connected=False)
    assert sched.on_failure(6, connected=True) == 0       # connected again, still no answer
    assert sched.down == 0 and sched.not_before is None
    assert sched.on_failure(7, connected=False) == 0      # a new run starts from the beginning


def test_next_poll_is_the_later_of_engine_and_backoff() -> None:
    sched = fixed(backoff_initial_ns=1, backoff_max_ns=100, down_after=1)
    sched.on_failure(0, connected=False)                  # bursting engine: now; backoff: 1 ns
    assert sched.engine.next_poll("a", 0) == 0 and sched.next_poll(0) == sched.not_before == 1
    for i in range(1, 10):                                # the burst gives up: the engine waits 1 s
        sched.on_failure(i, connected=False)
    due = sched.engine.next_poll("a", 9)
    assert sched.not_before == 9 + 100 < due and sched.next_poll(9) == due


def test_jitter_bounds_and_spread() -> None:
    rng = random.Random(42)
    waits = []
    for _ in range(400):
        sched = SourceScheduler("a", Engine(), SchedulerConfig(jitter=0.25), rng)
        sched.on_failure(0, connected=False)
        sched.on_failure(0, connected=False)
        waits.append(sched.on_failure(0, connected=False) / (2 * NS))   # nominal: 2 s
    assert all(0.75 <= w <= 1.25 for w in waits)
    assert min(waits) < 0.8 and max(waits) > 1.2          # the whole range is used ...
    assert len(set(waits)) > 390                          # ... not a few fixed values


def test_fleets_do_not_reconnect_in_lock_step() -> None:
    # Gateways that lost the same server at the same instant retry at different times.
    retries = []
    for seed in range(20):
        sched = SourceScheduler("a", Engine(), SchedulerConfig(), random.Random(seed))
        for _ in range(4):
            sched.on_failure(0, connected=False)
        retries.append(sched.not_before)
    assert len(set(retries)) == 20


@pytest.mark.parametrize("jitter", [0.0, 0.5])
def test_zero_jitter_is_exact(jitter: float) -> None:
    sched = fixed(jitter=jitter)
    for _ in range(3):
        wait = sched.on_failure(0, connected=False)
    nominal = 2 * NS
    assert (wait == nominal) if jitter == 0.0 else (nominal * 0.5 <= wait <= nominal * 1.5)
