"""A simulator for the sync engine: known truth in, measured error out (as chrony's clknetsim).

Time is simulated; nothing sleeps, so hours run in seconds. Everything is deterministic for a seed.

- `LocalClock`: the gateway's CLOCK_MONOTONIC_RAW as a function of true time: a frequency error
  (ppm), a random walk of that frequency (wander) and frequency steps (a temperature jump).
- `SimServer`: a TSQ server whose clock is truth plus a constant error (a liar), steps, stamp noise;
  it can be down for periods, and may send Clock Quality / Time Source / Metadata advisories.
- `SimPath`: one-way delays both ways (asymmetry), exponential queueing jitter, loss, and bursts of
  extra delay (an LTE-like link, tsq.testing.bursts).
- `Simulation`: runs the product's own policy against them, as chrony's clknetsim runs the real
  chronyd: per server the daemon's `SourceScheduler` (tsq.session.scheduler) decides when to poll, a
  real `ClientSession` (tsq.session.client: warm-up after each handshake, retry after a loss,
  interleaved refinement, the paired exchange, deadlines, stall detection) makes the exchanges, and
  a real `ServerSession` (tsq.session.server) answers them with real TSQ bytes; the `Engine` gets
  what the daemon gives it, `update` after each sample and every second. Every `eval_every_s` it
  records the model's error against truth and whether the bound contained it.

T1/T4 come from the simulated raw clock, T2/T3 in unix ns from the server's clock (the interleaved
report: the server's clock at the true departure, with its own stamp noise). True time is UTC
(unix ns), and the gateway's system clock reads true time (eras, the §6.6 offset check).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tsq.ntp import unix_ns_to_ntp64
from tsq.session.client import ClientOptions, ClientSession, Instant, JobDone, Outgoing, Stalled
from tsq.session.scheduler import SchedulerConfig, SourceScheduler
from tsq.session.server import Answer, ServerPolicy, ServerSession, ServerStats, stamp_paths
from tsq.sync.engine import Engine, ModelUpdate, SampleOutcome
from tsq.sync.exchange import Exchange
from tsq.testing.bursts import BurstSchedule

NS_PER_S = 1_000_000_000
START_UNIX_NS = 1_795_000_000 * NS_PER_S     # late 2026


class LocalClock:
    """raw(t) for true time t; frequency constant within `segment_s`-long segments of true time."""

    def __init__(self, freq_ppm: float = 0.0, wander_ppb_per_rt_s: float = 0.0,
                 freq_steps: Sequence[Tuple[float, float]] = (), *, raw0_ns: int = 4_321 * NS_PER_S,
                 start_unix_ns: int = START_UNIX_NS, segment_s: float = 1.0, seed: int = 1) -> None:
        self.freq_ppm = freq_ppm              # positive: raw runs fast
        self.wander = wander_ppb_per_rt_s
        self.freq_steps = sorted(freq_steps)
        self.raw0_ns = raw0_ns
        self.start_unix_ns = start_unix_ns
        self.segment_ns = int(segment_s * NS_PER_S)
        self._rng = random.Random(seed)
        self._phase: List[float] = [0.0]      # raw - raw0 at each segment start
        self._freq: List[float] = [self._step_sum(0) + freq_ppm]   # ppm within each segment
        self._walk = 0.0

    def _step_sum(self, k: int) -> float:
        t_s = k * self.segment_ns / NS_PER_S
        return sum(d for at, d in self.freq_steps if at <= t_s)

    def _extend(self, k: int) -> None:
        while len(self._phase) <= k:
            i = len(self._phase) - 1
            self._phase.append(self._phase[i] + self.segment_ns * (1.0 + self._freq[i] * 1e-6))
            if self.wander:
                self._walk += self._rng.gauss(0.0, self.wander * math.sqrt(self.segment_ns / NS_PER_S))
            self._freq.append(self.freq_ppm + self._step_sum(i + 1) + self._walk / 1000.0)

    def freq_at(self, true_ns: int) -> float:
        """The raw clock's frequency error (ppm, positive fast) at true time."""
        k = max(0, (true_ns - self.start_unix_ns) // self.segment_ns)
        self._extend(k)
        return self._freq[k]

    def raw_at(self, true_ns: int) -> int:
        el = true_ns - self.start_unix_ns
        if el < 0:
            raise ValueError("before the simulation's start")
        k = el // self.segment_ns
        self._extend(k)
        within = el - k * self.segment_ns
        return self.raw0_ns + round(self._phase[k] + within * (1.0 + self._freq[k] * 1e-6))

    def true_at(self, raw_ns: int) -> int:
        """Inverse of raw_at (for scheduling), for raw at or after the start."""
        rel = float(raw_ns - self.raw0_ns)
        while self._phase[-1] < rel:
            self._extend(len(self._phase))
        k = max(0, bisect.bisect_right(self._phase, rel) - 1)
        within = (rel - self._phase[k]) / (1.0 + self._freq[k] * 1e-6)
        return self.start_unix_ns + k * self.segment_ns + max(0, round(within))


@dataclass
class SimServer:
    name: str
    error_ns: int = 0                                   # constant error of its clock (a liar)
    steps: Sequence[Tuple[float, int]] = ()             # (at s, delta ns): its clock steps
    stamp_noise_ns: float = 0.0                         # gaussian noise on T2 and T3
    turnaround_ns: int = 20_000
    down: Sequence[Tuple[float, float]] = ()            # (from s, until s): no answers
    clock_quality: Any = None
    time_source: Any = None
    metadata: Tuple[Tuple[str, str], ...] = ()

    def clock(self, true_ns: int, elapsed_s: float) -> int:
        return true_ns + self.error_ns + sum(d for at, d in self.steps if at <= elapsed_s)

    def is_down(self, elapsed_s: float) -> bool:
        return any(a <= elapsed_s < b for a, b in self.down)


@dataclass
class SimPath:
    delay_ns: int = 50_000                 # one way, client -> server
    back_delay_ns: Optional[int] = None    # one way, server -> client (default: delay_ns)
    jitter_ns: float = 0.0                 # mean of the exponential queueing delay added per leg
    loss: float = 0.0                      # probability an exchange is lost
    uniform_jitter_ns: float = 0.0         # ± uniform per leg on top (what tsq.testing.relay adds)
    # Bursty delay (tsq.testing.bursts, an LTE-like link): bursts start every `burst_every_s` on
    # average (0: never), last `burst_length_s` on average, and add an exponential delay of mean
    # `burst_delay_ns` to each leg inside one. Each leg has its own schedule, so bursts are asymmetric.
    burst_every_s: float = 0.0
    burst_length_s: float = 2.0
    burst_delay_ns: float = 0.0
    burst_seed: int = 1
    _bursts: Dict[Tuple[object, str], BurstSchedule] = field(default_factory=dict, init=False, repr=False,
                                                             compare=False)

    def burst_extra_ns(self, leg: str, elapsed_s: float, run: object = 0,
                       rng: Optional[random.Random] = None) -> float:
        """Extra delay of a packet on `leg` ("fwd" or "back") sent `elapsed_s` into the run. The burst
        times depend on (`burst_seed`, `run`, `leg`) only; the per-packet draw comes from `rng`."""
        if not self.burst_every_s:
            return 0.0
        schedule = self._bursts.get((run, leg))
        if schedule is None:
            schedule = self._bursts[(run, leg)] = BurstSchedule(
                self.burst_every_s, self.burst_length_s, self.burst_delay_ns / NS_PER_S,
                seed=f"{self.burst_seed}:{run}:{leg}")
        return schedule.extra_s(elapsed_s, rng) * NS_PER_S


@dataclass(frozen=True)
class EvalRecord:
    t_s: float                             # true seconds since start
    state: str
    error_ns: Optional[int]                # model UTC - true UTC
    bound_ns: Optional[int]


@dataclass
class SimResult:
    records: List[EvalRecord] = field(default_factory=list)
    outcomes: List[Tuple[float, SampleOutcome]] = field(default_factory=list)
    updates: List[Tuple[float, ModelUpdate]] = field(default_factory=list)
    first_sync_s: Optional[float] = None
    exchanges: int = 0
    lost: int = 0

    def summary(self, after_s: float = 0.0) -> Dict[str, Any]:
        """p50/p99/max |error|, bound containment and time synchronised, from `after_s` on."""
        recs = [r for r in self.records if r.t_s >= after_s]
        answered = [r for r in recs if r.error_ns is not None and r.bound_ns is not None]
        errs = sorted(abs(r.error_ns) for r in answered if r.error_ns is not None)
        contained = sum(1 for r in answered if r.error_ns is not None and r.bound_ns is not None
                        and abs(r.error_ns) <= r.bound_ns)
        bounds = sorted(r.bound_ns for r in answered if r.bound_ns is not None)
        return {
            "evaluations": len(recs),
            "answered": len(answered),
            "synchronised": sum(1 for r in recs if r.state == "synchronised") / max(1, len(recs)),
            "p50_ns": percentile(errs, 50), "p99_ns": percentile(errs, 99),
            "max_ns": errs[-1] if errs else None,
            "bound_p50_ns": percentile(bounds, 50),
            "contained": contained / len(answered) if answered else None,
            "first_sync_s": self.first_sync_s,
        }


def percentile(sorted_values: Sequence[int], p: float) -> Optional[int]:
    """Nearest-rank percentile of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class _Link:
    """One server's connection in the simulation: the client and server sessions, or none."""

    def __init__(self, name: str, scheduler: SourceScheduler) -> None:
        self.name = name
        self.scheduler = scheduler
        self.client: Optional[ClientSession] = None
        self.server: Optional[ServerSession] = None
        self.job: Optional[int] = None
        self.deadline_version = 0
        self.generation = 0        # bumped when the connection is dropped: stale events are ignored


class Simulation:
    """Drives the daemon's scheduler, a client session per server and the Engine against simulated
    servers and a simulated raw clock (see the module docstring)."""

    def __init__(self, engine: Engine, clock: LocalClock, servers: Sequence[Tuple[SimServer, SimPath]],
                 *, seed: int = 1, timeout_s: float = 1.0, eval_every_s: float = 1.0,
                 mode: str = "datagram", paired: bool = True, interleaved: bool = True,
                 connect_timeout_s: float = 3.0) -> None:
        self.engine = engine
        self.clock = clock
        self.servers = {s.name: (s, p) for s, p in servers}
        self.rng = random.Random(seed)
        self._seed = seed
        self.timeout_ns = int(timeout_s * NS_PER_S)
        self.connect_timeout_ns = int(connect_timeout_s * NS_PER_S)
        self.eval_ns = int(eval_every_s * NS_PER_S)
        self.mode = mode
        self.paired = paired
        self.interleaved = interleaved
        self.start = clock.start_unix_ns
        self.now = self.start
        self.result = SimResult()
        self._queue: List[Tuple[int, int, str, str, Any]] = []
        self._seq = 0
        self._stats = ServerStats()
        self.links: Dict[str, _Link] = {}
        for name in self.servers:
            sched = SourceScheduler(name, engine, SchedulerConfig(), random.Random(f"{seed}:{name}"))
            self.links[name] = _Link(name, sched)

    def _push(self, t: int, kind: str, name: str = "", payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, name, payload))

    def _elapsed(self, t: int) -> float:
        return (t - self.start) / NS_PER_S

    def _instant(self, t: int) -> Instant:
        return Instant(self.clock.raw_at(t), t)

    def true_offset_ns(self, raw_ns: int) -> int:
        """UTC - raw at a raw instant: what the engine should find."""
        return self.clock.true_at(raw_ns) - raw_ns

    def run(self, duration_s: float) -> SimResult:
        if not self._queue:
            for name in self.servers:
                self._push(self.now, "poll", name)
            self._push(self.now + self.eval_ns, "eval")
        end = self.now + int(duration_s * NS_PER_S)
        while self._queue and self._queue[0][0] <= end:
            t, _, kind, name, payload = heapq.heappop(self._queue)
            self.now = t
            link = self.links.get(name)
            if kind == "eval":
                self._evaluate()
                self._push(t + self.eval_ns, "eval")
            elif link is None:
                continue
            elif kind == "poll":
                self._poll(link)
            elif kind == "connected":
                if payload == link.generation:
                    self._connected(link)
            elif kind == "connect_failed":
                if payload == link.generation:
                    self._poll_failed(link, connected=False)
            elif kind == "to_server":
                generation, out = payload
                if generation == link.generation:
                    self._at_server(link, out)
            elif kind == "to_client":
                generation, key, mode, data, t4 = payload
                if generation == link.generation:
                    self._at_client(link, key, mode, data, t4)
            elif kind == "deadline":
                generation, version = payload
                if generation == link.generation and version == link.deadline_version:
                    self._deadline(link)
        self.now = end
        return self.result

    # ------------------------------------------------------------------------------ the daemon
    def _poll(self, link: _Link) -> None:
        server, path = self.servers[link.name]
        if link.client is None or not link.client.connected:
            self._drop(link)
            if server.is_down(self._elapsed(self.now)):
                self._push(self.now + self.connect_timeout_ns, "connect_failed", link.name, link.generation)
            else:
                # Initial, Handshake, then the client's Finished: about one and a half round trips.
                fwd, bwd = self._legs(path, link.name, self.now)
                self._push(self.now + round(2 * fwd + bwd), "connected", link.name, link.generation)
            return
        self._start_sample(link)

    def _connected(self, link: _Link) -> None:
        opts = ClientOptions(name=link.name, interleaved=self.interleaved, paired=self.paired,
                             timeout_ns=self.timeout_ns)
        link.client = ClientSession(opts, nonce_source=self.rng.randbytes)
        link.client.handshake_completed(self._instant(self.now), "tsq", peer_datagrams=True)
        server, _ = self.servers[link.name]
        # The SimServer's advisories go out as a real server's would: in its policy's TLVs.
        policy = ServerPolicy(metadata=tuple(server.metadata), time_source=server.time_source,
                              clock_quality=server.clock_quality)
        link.server = ServerSession(policy, self._stats, stamp_paths(), link.name)
        link.server.handshake_completed("tsq")
        self._start_sample(link)

    def _start_sample(self, link: _Link) -> None:
        assert link.client is not None
        link.job = link.client.start_sample(self._instant(self.now), self.mode)
        self._pump(link)

    def _poll_failed(self, link: _Link, connected: bool) -> None:
        raw = self.clock.raw_at(self.now)
        link.scheduler.on_failure(raw, connected)
        self._update(raw)
        self._schedule_poll(link, raw)

    def _drop(self, link: _Link) -> None:
        link.client = link.server = None
        link.job = None
        link.generation += 1

    def _pump(self, link: _Link) -> None:
        """Send what the client queued, hand its events to the scheduler, re-arm its deadline."""
        client = link.client
        if client is None:
            return
        for out in client.take_outgoing():
            if isinstance(out, Outgoing):
                t1 = self.clock.raw_at(self.now)
                client.sent(out.key, t1)
                client.tx_stamp(out.key, t1)
                self.result.exchanges += 1
                self._push(self.now, "to_server", link.name, (link.generation, out))
        stalled = False
        while True:
            event = client.next_event()
            if event is None:
                break
            if isinstance(event, JobDone) and event.job == link.job:
                link.job = None
                raw = self.clock.raw_at(self.now)
                if event.exchange is not None:
                    outcome = link.scheduler.on_sample(event.exchange, raw)
                    self.result.outcomes.append((self._elapsed(self.now), outcome))
                    self._update(raw)
                    self._schedule_poll(link, raw)
                else:
                    self._poll_failed(link, client.connected)
            elif isinstance(event, Stalled):
                stalled = True
        if stalled:
            self._drop(link)   # as the client edge does: the next poll reconnects
            return
        link.deadline_version += 1
        at = client.next_deadline()
        if at is not None:
            # A microsecond late: true_at() inverts raw_at() only to the nanosecond, and a deadline
            # event a hair early would expire nothing and come back at the same instant for ever.
            self._push(max(self.now, self.clock.true_at(at)) + 1_000, "deadline", link.name,
                       (link.generation, link.deadline_version))

    def _deadline(self, link: _Link) -> None:
        if link.client is not None:
            link.client.handle_timer(self._instant(self.now))
            self._pump(link)

    # ------------------------------------------------------------------------------ the network
    def _legs(self, path: SimPath, name: str, t: int) -> Tuple[float, float]:
        """One-way delays (forward, back) of a packet pair whose request leaves at true time t."""
        rng = self.rng
        back = path.delay_ns if path.back_delay_ns is None else path.back_delay_ns
        fwd = path.delay_ns + (rng.expovariate(1.0 / path.jitter_ns) if path.jitter_ns else 0.0)
        bwd = back + (rng.expovariate(1.0 / path.jitter_ns) if path.jitter_ns else 0.0)
        if path.uniform_jitter_ns:
            fwd += rng.uniform(-path.uniform_jitter_ns, path.uniform_jitter_ns)
            bwd += rng.uniform(-path.uniform_jitter_ns, path.uniform_jitter_ns)
        run = (self._seed, name)         # each run and server its own burst times
        fwd += path.burst_extra_ns("fwd", self._elapsed(t), run, rng)
        bwd += path.burst_extra_ns("back", self._elapsed(t + round(fwd)), run, rng)
        return fwd, bwd

    def _at_server(self, link: _Link, out: Outgoing) -> None:
        """A request leaves the client now: it reaches the server (or is lost) and is answered."""
        server, path = self.servers[link.name]
        if link.server is None:
            return
        if server.is_down(self._elapsed(self.now)) or (path.loss and self.rng.random() < path.loss):
            self.result.lost += 1
            return
        fwd, bwd = self._legs(path, link.name, self.now)
        t2_true = self.now + round(fwd)
        t3_true = t2_true + server.turnaround_ns
        noise = server.stamp_noise_ns
        rng = self.rng
        t2 = server.clock(t2_true, self._elapsed(t2_true)) + (round(rng.gauss(0, noise)) if noise else 0)
        t3 = server.clock(t3_true, self._elapsed(t3_true)) + (round(rng.gauss(0, noise)) if noise else 0)
        session = link.server
        if out.mode == "datagram":
            actions = session.datagram_received(out.data, t2, self._elapsed(t2_true))
        else:
            actions = session.stream_data(4 * out.key, out.data, True, t2)
            actions += session.packet_done(self._elapsed(t2_true))
        for action in actions:
            if not isinstance(action, Answer):
                continue
            t3 = max(t3, t2)
            builder = action.builder
            builder.buffer[builder.send_ts_offset:builder.send_ts_offset + 8] = \
                unix_ns_to_ntp64(t3).to_bytes(8, "big")
            payload = builder.finish()
            # The kernel's TX stamp (what the interleaved report carries): the server clock at the
            # true departure, stamped with its own noise.
            tx = server.clock(t3_true, self._elapsed(t3_true)) + (round(rng.gauss(0, noise)) if noise else 0)
            session.response_sent(action.nonce, action.path, t3, max(tx, t2))
            t4 = t3_true + round(bwd)
            self._push(t4, "to_client", link.name, (link.generation, out.key, out.mode, payload, t4))

    def _at_client(self, link: _Link, key: int, mode: str, data: bytes, t4: int) -> None:
        client = link.client
        if client is None:
            return
        now = self._instant(self.now)
        client.packet_received(now.raw_ns)
        if mode == "datagram":
            client.datagram_received(now, data, now.raw_ns, True)
        else:
            client.stream_data(key, data, True, now.raw_ns, True)
            client.packet_done(now)
        self._pump(link)

    # ------------------------------------------------------------------------------ the engine
    def _update(self, raw: int) -> None:
        up = self.engine.update(raw)
        if up is None:
            return
        self.result.updates.append((self._elapsed(self.now), up))
        if self.result.first_sync_s is None and up.state == "synchronised":
            self.result.first_sync_s = self._elapsed(self.now)

    def _evaluate(self) -> None:
        raw = self.clock.raw_at(self.now)
        self._update(raw)
        model = self.engine.model
        utc = model.utc_ns(raw)
        self.result.records.append(EvalRecord(
            self._elapsed(self.now), model.state(raw), None if utc is None else utc - self.now,
            model.error_bound_ns(raw)))

    def _schedule_poll(self, link: _Link, raw: int) -> None:
        due = link.scheduler.next_poll(raw)
        t = self.now if due <= raw else max(self.now, self.clock.true_at(due))
        self._push(t, "poll", link.name)

    def exchange_at(self, server: SimServer, path: SimPath, t: int) -> Tuple[Exchange, int]:
        """The Exchange a basic request sent at true time t produces, and its true arrival time
        (the four stamps only, without the sessions: for checking the simulator itself)."""
        fwd, bwd = self._legs(path, server.name, t)
        rng = self.rng
        t2_true = t + round(fwd)
        t3_true = t2_true + server.turnaround_ns
        t4_true = t3_true + round(bwd)
        noise = server.stamp_noise_ns
        t2 = server.clock(t2_true, self._elapsed(t2_true)) + (round(rng.gauss(0, noise)) if noise else 0)
        t3 = server.clock(t3_true, self._elapsed(t3_true)) + (round(rng.gauss(0, noise)) if noise else 0)
        ex = Exchange(server=server.name, mode=self.mode, t1_raw=self.clock.raw_at(t), t2_unix=t2,
                      t3_unix=max(t3, t2), t4_raw=self.clock.raw_at(t4_true), kernel_t1=True,
                      kernel_t4=True, clock_quality=server.clock_quality, time_source=server.time_source,
                      metadata=server.metadata)
        return ex, t4_true
