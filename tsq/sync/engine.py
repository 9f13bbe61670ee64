"""The sync engine facade (sans-IO): exchanges in, a time model and status out.

    engine = Engine(minpoll=0, maxpoll=6)          # or Engine(EngineConfig(...))
    engine.add_source("127.0.0.1:4433")
    due = engine.next_poll(name, now_raw)          # raw ns when to ask that server next
    outcome = engine.on_exchange(ex, now_raw)      # per sample: accepted or why not (field log)
    engine.on_timeout(name, now_raw)               # no answer (reach register)
    update = engine.update(now_raw)                # selection + combination when there is news
    engine.model.utc_ns(raw), .error_bound_ns(raw), .state(raw), .leap()
    engine.tracking(now_raw, realtime_ns)          # typed TrackingStatus (tsq.sync.tracking)

Every time is an argument; nothing here reads a clock. See docs/engine.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from tsq.sync.drift import DriftRecord, FrequencyTracker, judge
from tsq.sync.exchange import Exchange, SampleRejected, check
from tsq.sync.filter import FilterConfig, Sample, SourceEstimate, SourceFilter
from tsq.sync.model import (
    LEAP_DELETE,
    LEAP_INSERT,
    LEAP_NONE,
    LEAP_UNKNOWN,
    ClockModel,
    ModelConfig,
)
from tsq.sync.poll import PollConfig, PollController
from tsq.sync.select import Candidate, Selection, select
from tsq.sync.tracking import SourceStatus, TrackingStatus

NS_PER_S = 1_000_000_000

_LEAP_WORDS = {"0": LEAP_NONE, "none": LEAP_NONE, "1": LEAP_INSERT, "insert": LEAP_INSERT,
               "2": LEAP_DELETE, "delete": LEAP_DELETE, "3": LEAP_UNKNOWN, "unknown": LEAP_UNKNOWN}


@dataclass(frozen=True)
class EngineConfig:
    minpoll: int = 0                       # log2 s
    maxpoll: int = 6
    burst_samples: int = 4                 # accepted samples wanted from the start burst
    burst_max: int = 8                     # exchanges at most in a burst
    burst_spacing_ns: int = 0
    min_samples: int = 3                   # a source is usable with this many samples
    max_samples: int = 128                 # longest regression window (runs test shortens it)
    max_offset_ns: int = 86_400 * NS_PER_S   # draft §6.6 threshold against the model
    max_freq_ppm: float = 100.0            # 1-sigma prior on the raw clock's frequency error
    max_clock_error_ppb: float = 1000.0    # oscillator wander allowance = holdover growth (+3 se)
    max_distance_ns: int = 3 * NS_PER_S    # chrony's maxdistance: a source farther is unusable
    max_holdover_growth_ns: int = 100_000_000   # bound grown this far past the last update: unsynchronised
    holdover_after_s: Optional[float] = None   # backstop, default 10 x 2**maxpoll (reach acts sooner)
    minsources: int = 1                    # agreeing sources needed for any update (chrony's minsources)
    unreachable_polls: int = 2             # unanswered polls in a row: unreachable (clean path) ...
    unreachable_chance: float = 0.001      # ... or, on a lossy path, a run this unlikely by chance
    drift_wander_ppb_per_rt_s: float = 1.0   # how fast a saved frequency goes stale (tsq.sync.drift)


@dataclass(frozen=True)
class SampleOutcome:
    """What became of one exchange: one line of the gateway-samples field log."""

    server: str
    mode: str
    accepted: bool
    reason: str                            # "ok", "step: ...", "delay spike ...", "§6.6: ..."
    raw_ns: int                            # midpoint of T1 and T4
    offset_ns: int                         # measured UTC - raw (large)
    delay_ns: int
    relative_offset_ns: Optional[int]      # offset_ns minus the model's (None before a model)
    jitter_ns: Optional[float]
    samples: int
    poll_s: float


@dataclass(frozen=True)
class ModelUpdate:
    """The result of a selection round: one line of the gateway-model field log."""

    raw_ns: int
    decided: bool
    reason: str
    state: str
    offset_ns: Optional[int]               # UTC - raw at raw_ns
    freq_ppm: Optional[float]
    freq_error_ppm: Optional[float]
    error_bound_ns: Optional[int]
    sources: int                           # survivors combined
    selected: Optional[str]
    falsetickers: Tuple[str, ...]
    leap: int
    configured: int = 0                    # sources the engine was given
    reachable: int = 0                     # of those, answering
    agreeing: int = 0                      # of those, confirmed the model in this round
    refreshed: bool = False                # the model was re-anchored on new samples (else only kept)


@dataclass
class _Source:
    name: str
    filter: SourceFilter
    poll: PollController
    mode: Optional[str] = None
    last_delay_ns: Optional[int] = None
    stratum: Optional[int] = None
    claimed_error_ns: float = 0.0
    leap: int = LEAP_NONE
    missed: int = 0                        # polls in a row without an answer
    loss: float = 0.0                      # average share of polls unanswered (before this run)
    answered: bool = False
    last_answer_raw: Optional[int] = None
    distrusted: bool = False               # a falseticker until a quorum finds it agreeing again
    selection: str = "unusable"
    accepted: int = 0
    rejected: int = 0
    last_reason: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


def _leap_from(metadata: Any) -> Optional[int]:
    for item in metadata or ():
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if str(key).lower() == "leap":
            return _LEAP_WORDS.get(str(value).strip().lower())
    return None


def _fmt_ns(ns: float) -> str:
    mag = abs(ns)
    if mag < 1e6:
        return f"{ns / 1e3:.0f} us"
    if mag < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def _age_s(now_raw: int, then_raw: int) -> float:
    return round((now_raw - then_raw) / NS_PER_S, 3)


def _names(names: List[str]) -> str:
    return ", ".join(names)


LOSS_WEIGHT = 1.0 / 16                     # the loss average's memory: about 16 polls
REACH_BITS = 8                             # never more misses than the reach register holds


class Engine:
    def __init__(self, config: Optional[EngineConfig] = None, **overrides: Any) -> None:
        cfg = config or EngineConfig()
        if overrides:
            cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if cfg.minpoll > cfg.maxpoll:
            raise ValueError(f"minpoll {cfg.minpoll} > maxpoll {cfg.maxpoll}")
        if cfg.minsources < 1:
            raise ValueError(f"minsources {cfg.minsources} < 1")
        self.config = cfg
        # Reachability moves the state within a few polls; this backstop only catches a source that
        # answers but whose samples are all rejected: the reach register's 8 polls and two more.
        holdover = (cfg.holdover_after_s if cfg.holdover_after_s is not None
                    else (REACH_BITS + 2) * 2.0 ** cfg.maxpoll)
        self.model = ClockModel(ModelConfig(
            max_clock_error_ppb=cfg.max_clock_error_ppb, max_bound_ns=cfg.max_distance_ns,
            max_holdover_growth_ns=cfg.max_holdover_growth_ns, holdover_after_ns=int(holdover * NS_PER_S)))
        self._filter_config = FilterConfig(
            max_samples=cfg.max_samples, max_freq_ppm=cfg.max_freq_ppm,
            max_clock_error_ppb=cfg.max_clock_error_ppb)
        self._poll_config = PollConfig(
            minpoll=cfg.minpoll, maxpoll=cfg.maxpoll, burst_samples=cfg.burst_samples,
            burst_max=cfg.burst_max, burst_spacing_ns=cfg.burst_spacing_ns)
        self.sources: Dict[str, _Source] = {}
        self.last_selection: Optional[Selection] = None
        self.agreeing: Tuple[str, ...] = ()     # the sources that confirmed the model last
        self._news = False                  # something for the next round: a sample or a voice came/went
        self._fresh = False                 # an accepted sample since the last round
        self._drift: Optional[DriftRecord] = None   # imported, to re-judge once UTC is known
        self._prior: Optional[Tuple[float, float]] = None
        self.drift_verdict: Optional[str] = None
        self.frequency = FrequencyTracker()

    # ------------------------------------------------------------------------------ sources
    def add_source(self, name: str) -> None:
        if name not in self.sources:
            src = _Source(name, SourceFilter(self._filter_config), PollController(self._poll_config))
            if self._prior is not None:
                src.filter.set_prior(*self._prior)
            self.sources[name] = src

    def remove_source(self, name: str) -> None:
        """A server taken out of the configuration: it no longer counts, votes or is shown."""
        self.sources.pop(name, None)
        self._news = True   # the next round re-selects without it

    def _source(self, name: str) -> _Source:
        self.add_source(name)
        return self.sources[name]

    @property
    def quorum(self) -> int:
        """Agreeing sources needed to move the model past its own bound: a strict majority of the
        configured sources (1 of 1, 2 of 2 or 3, 3 of 4 or 5)."""
        return len(self.sources) // 2 + 1

    def misses_allowed(self, src: _Source) -> int:
        """Unanswered polls in a row after which `src` is unreachable: `unreachable_polls` on a clean
        path; on a lossy one, enough that a run that long has at most `unreachable_chance` of being
        bad luck at its measured loss; never more than the reach register's 8."""
        cfg = self.config
        loss = src.loss
        if loss <= 0.0:
            return min(cfg.unreachable_polls, REACH_BITS)
        if loss >= cfg.unreachable_chance ** (1.0 / REACH_BITS):
            return REACH_BITS
        need = math.ceil(math.log(cfg.unreachable_chance) / math.log(loss))
        return min(max(cfg.unreachable_polls, need), REACH_BITS)

    def reachable(self, src: _Source) -> bool:
        return src.answered and src.missed < self.misses_allowed(src)

    def next_poll(self, name: str, now_raw: int) -> int:
        """Raw ns at which to poll `name` next (<= now_raw: now)."""
        return self._source(name).poll.next_poll(now_raw)

    def on_timeout(self, name: str, now_raw: int) -> None:
        src = self._source(name)
        was = self.reachable(src)
        src.poll.on_timeout(now_raw)
        src.missed += 1
        if was and not self.reachable(src):
            self._news = True             # a voice left: the next update() re-runs the selection

    def _answered(self, src: _Source, now_raw: int) -> None:
        was = self.reachable(src)
        # The run of misses that this answer ends goes into the loss average (an ongoing run does
        # not: it would make a dead source look like a lossy one and keep it in the quorum).
        for _ in range(min(src.missed, 64)):
            src.loss += (1.0 - src.loss) * LOSS_WEIGHT
        if src.answered:
            src.loss -= src.loss * LOSS_WEIGHT
        src.missed = 0
        src.answered = True
        src.last_answer_raw = now_raw
        if not was:
            self._news = True

    def on_exchange(self, ex: Exchange, now_raw: int) -> SampleOutcome:
        """Check and filter one exchange; the model changes only in update()."""
        src = self._source(ex.server)
        src.mode = ex.mode
        self._answered(src, now_raw)
        offset, delay = ex.offset_ns, ex.delay_ns
        src.last_delay_ns = delay
        mid = ex.t1_raw + (ex.t4_raw - ex.t1_raw) // 2
        model_offset = self.model.offset_ns(mid)
        self._note_advisories(src, ex)
        try:
            check(ex, raw_to_unix_ns=offset if model_offset is None else model_offset,
                  max_offset_ns=self.config.max_offset_ns)
        except SampleRejected as exc:
            src.poll.on_sample(now_raw, False, None, 0.0)
            return self._outcome(src, ex, False, f"§6.6: {exc}", mid, offset, delay, model_offset)
        verdict = src.filter.add(Sample(mid, offset, delay))
        est = src.filter.estimate(mid)
        assert est is not None                   # the first sample is always kept, and never dropped
        # A sample with excess delay may miss by half of it without anything being wrong.
        jitter = max(est.jitter_ns, (delay - est.min_delay_ns) / 2, self._filter_config.sigma_floor_ns)
        src.poll.on_sample(now_raw, verdict.accepted, verdict.prediction_error_ns, jitter,
                           step=verdict.reason.startswith("step"))
        if verdict.accepted:
            self._news = self._fresh = True
        return self._outcome(src, ex, verdict.accepted, verdict.reason, mid, offset, delay, model_offset)

    def _note_advisories(self, src: _Source, ex: Exchange) -> None:
        quality, source_info = ex.clock_quality, ex.time_source
        error_us = getattr(quality, "error_us", None)
        src.claimed_error_ns = float(error_us) * 1000.0 if isinstance(error_us, int) else 0.0
        stratum = getattr(source_info, "stratum", None)
        src.stratum = stratum if isinstance(stratum, int) else None
        leap = _leap_from(ex.metadata)
        if leap is not None:
            src.leap = leap

    def _outcome(self, src: _Source, ex: Exchange, accepted: bool, reason: str, mid: int, offset: int,
                 delay: int, model_offset: Optional[int]) -> SampleOutcome:
        if accepted:
            src.accepted += 1
        else:
            src.rejected += 1
        src.last_reason = reason
        est = src.filter.estimate(mid)
        return SampleOutcome(
            server=src.name, mode=ex.mode, accepted=accepted, reason=reason, raw_ns=mid,
            offset_ns=offset, delay_ns=delay,
            relative_offset_ns=None if model_offset is None else offset - model_offset,
            jitter_ns=None if est is None else est.jitter_ns, samples=len(src.filter.samples),
            poll_s=src.poll.interval_ns / NS_PER_S)

    # ------------------------------------------------------------------------------ selection
    def _usable(self, src: _Source, now_raw: int) -> Optional[SourceEstimate]:
        est = src.filter.estimate(now_raw)
        if est is None or est.samples < self.config.min_samples or not self.reachable(src):
            return None
        if est.distance_ns > self.config.max_distance_ns:
            return None
        return est

    def update(self, now_raw: int) -> Optional[ModelUpdate]:
        """Run selection and combination if a sample was accepted or a source came or went since
        the last round (None: nothing new).

        A strict majority of the configured sources (`quorum`) that agree moves the model freely.
        Fewer, but at least `minsources`, and with no trusted usable source disagreeing, may only
        refine it: their combined interval is cut to the model's own [offset - bound, offset + bound],
        and if nothing is left they are not followed.
        A source marked falseticker by a quorum stays distrusted, out of those refinements, until a
        quorum finds it agreeing again."""
        if not self._news:
            return None
        fresh = self._fresh
        self._news = self._fresh = False
        cands: List[Candidate] = []
        for src in self.sources.values():
            est = self._usable(src, now_raw)
            if est is not None:
                cands.append(Candidate(src.name, est.offset_ns, est.distance_ns, est.freq_ppb,
                                       est.freq_se_ppb, src.claimed_error_ns, src.stratum))
            src.selection = "unusable" if est is None else "candidate"
        sel, reason = self._decide(cands, now_raw)
        unconfirmed = self.model.undecided_since is not None or self.model.raw_ref is None
        if sel.decided and not fresh and unconfirmed:
            # A source came or went but nothing was measured: a round may keep a confirmation, never
            # give one (anchoring on extrapolated estimates would restart the holdover clock).
            sel, reason = Selection(False, "no fresh sample"), self.model.reason
        self.last_selection = sel
        for src in self.sources.values():
            if src.distrusted:
                src.selection = "falseticker"
        if sel.decided:
            assert sel.offset_ns is not None and sel.bound_ns is not None
            assert sel.freq_ppb is not None and sel.freq_se_ppb is not None
            for name in sel.combined:
                self.sources[name].selection = "combined"
            assert sel.selected is not None
            self.sources[sel.selected].selection = "selected"
            self.agreeing = sel.combined
            self.model.reason = reason
            if fresh:
                iv = self.model.interval_ns(now_raw)
                stepped = iv is not None and not iv[0] <= sel.offset_ns <= iv[1]
                self.model.update(now_raw, sel.offset_ns, sel.freq_ppb, sel.freq_se_ppb, sel.bound_ns,
                                  self._leap(sel.combined), reason)
                self.frequency.add(now_raw, sel.offset_ns, stepped)
                self._rejudge_drift(now_raw)
        else:
            self.agreeing = ()
            self.model.mark_undecided(now_raw, reason)
        known = self.model.raw_ref is not None
        return ModelUpdate(
            raw_ns=now_raw, decided=sel.decided, reason=reason, state=self.model.state(now_raw),
            offset_ns=self.model.offset_ns(now_raw),
            freq_ppm=self.model.freq_ppm if known else None,
            freq_error_ppm=self.model.freq_error_ppm if known else None,
            error_bound_ns=self.model.error_bound_ns(now_raw), sources=len(sel.combined),
            selected=sel.selected, falsetickers=sel.falsetickers, leap=self.model.leap(),
            configured=len(self.sources), reachable=self.reachable_count(), agreeing=len(self.agreeing),
            refreshed=sel.decided and fresh)

    def reachable_count(self) -> int:
        return sum(1 for s in self.sources.values() if self.reachable(s))

    def _decide(self, cands: List[Candidate], now_raw: int) -> Tuple[Selection, str]:
        """The selection to apply (decided or not) and the reason in words."""
        cfg = self.config
        n, quorum, reachable = len(self.sources), self.quorum, self.reachable_count()
        if reachable == 0:
            return Selection(False, "no reachable source"), "no answer from any source"
        if reachable < cfg.minsources:
            return (Selection(False, "too few sources"),
                    f"only {reachable} of {n} sources reachable, minsources {cfg.minsources}")
        if not cands:
            return (Selection(False, "no usable source"),
                    f"{reachable} of {n} sources reachable, none usable yet")
        sel = select(cands, n)
        if sel.decided and len(sel.combined) >= cfg.minsources:
            for name in sel.falsetickers:
                self.sources[name].distrusted = True
            for name in sel.combined:
                self.sources[name].distrusted = False
            unreachable = n - reachable
            return sel, sel.reason + (f" ({unreachable} unreachable)" if unreachable else "")
        # No quorum: at most a refinement inside the model's bound, by trusted sources only.
        model_iv = self.model.interval_ns(now_raw)
        if model_iv is None:
            if sel.decided:
                return (Selection(False, sel.reason),
                        f"only {len(sel.combined)} of {n} sources agree, minsources {cfg.minsources}")
            return Selection(False, sel.reason), f"cannot decide: no {quorum} of {n} sources agree"
        trusted = [c for c in cands if not self.sources[c.name].distrusted]
        if len(trusted) < cfg.minsources:
            liars = [c.name for c in cands if self.sources[c.name].distrusted]
            return (Selection(False, "distrusted"),
                    f"no {quorum} of {n} sources agree, and {_names(liars)} stays a falseticker until "
                    f"{quorum} do")
        # Without a quorum a disagreement cannot be settled: the trusted voices must all agree.
        sub = select(trusted, len(trusted))
        if not sub.decided or sub.falsetickers:
            return (Selection(False, sub.reason),
                    f"cannot decide: no {quorum} of {n} sources agree, and the others disagree")
        assert sub.lo_ns is not None and sub.hi_ns is not None and sub.offset_ns is not None
        lo, hi = max(sub.lo_ns, model_iv[0]), min(sub.hi_ns, model_iv[1])
        if lo > hi:
            model_mid = (model_iv[0] + model_iv[1]) // 2
            return (Selection(False, "beyond the model's bound"),
                    f"{_names(list(sub.combined))} {_fmt_ns(sub.offset_ns - model_mid)} from the model, "
                    f"beyond its bound {_fmt_ns((model_iv[1] - model_iv[0]) / 2)}, and no {quorum} of {n} "
                    "sources agree")
        offset = min(max(sub.offset_ns, lo), hi)
        refined = dataclasses.replace(sub, offset_ns=offset, bound_ns=float(max(offset - lo, hi - offset)),
                                      lo_ns=lo, hi_ns=hi)
        return refined, (f"{len(sub.combined)} of {n} sources agree, inside the model's bound "
                         f"({quorum} needed to move it further)")

    def _leap(self, names: Tuple[str, ...]) -> int:
        """A leap announcement counts when more than half of the survivors make it."""
        votes = Counter(self.sources[n].leap for n in names)
        value, count = votes.most_common(1)[0]
        return value if 2 * count > len(names) else LEAP_NONE

    # ------------------------------------------------------------------------------ drift
    def export_drift(self, now_raw: int, realtime_now_ns: int) -> Optional[DriftRecord]:
        """The frequency worth saving, stamped with the model's UTC and raw instant of its last
        update (None while unsynchronised: there is nothing measured to save)."""
        model = self.model
        if model.raw_ref is None or model.expired(now_raw):
            return None
        freq, se = model.freq_ppb, model.freq_se_ppb
        long_line = self.frequency.estimate()
        if long_line is not None and long_line[1] < se:
            freq, se = long_line
        return DriftRecord(freq, se, model.raw_ref + model.offset_ref, model.raw_ref)

    def import_drift(self, record: DriftRecord, now_raw: int, realtime_now_ns: int) -> str:
        """Start every source's frequency from a saved record if it is fresh (tsq.sync.drift); the
        verdict in words. The age is taken from the system clock now and checked again against the
        model's own UTC at the first update (a gateway without an RTC may boot with a stale clock)."""
        se, verdict = judge(record, realtime_now_ns, self.config.drift_wander_ppb_per_rt_s,
                            self.config.max_clock_error_ppb)
        self.drift_verdict = verdict
        if se is None:
            return verdict
        self._drift = record
        self._set_prior((record.freq_ppb, se))
        return verdict

    def _set_prior(self, prior: Optional[Tuple[float, float]]) -> None:
        self._prior = prior
        for src in self.sources.values():
            if prior is None:
                src.filter.set_prior(0.0, self._filter_config.max_freq_ppm * 1000.0)
            else:
                src.filter.set_prior(*prior)

    def _rejudge_drift(self, now_raw: int) -> None:
        record = self._drift
        if record is None:
            return
        self._drift = None
        utc = self.model.utc_ns(now_raw)
        assert utc is not None                   # called right after a successful update
        se, verdict = judge(record, utc, self.config.drift_wander_ppb_per_rt_s,
                            self.config.max_clock_error_ppb)
        self.drift_verdict = verdict + " (by the model's UTC)"
        self._set_prior(None if se is None else (record.freq_ppb, se))

    # ------------------------------------------------------------------------------ status
    def poll_s(self) -> Optional[float]:
        """The poll interval of the selected source (else the shortest), seconds."""
        if not self.sources:
            return None
        sel = self.last_selection
        if sel is not None and sel.decided and sel.selected in self.sources:
            return self.sources[sel.selected].poll.interval_ns / NS_PER_S
        return min(s.poll.interval_ns for s in self.sources.values()) / NS_PER_S

    def _reason(self, now_raw: int) -> str:
        """The model's state in words, at now_raw."""
        model = self.model
        if model.raw_ref is not None and model.expired(now_raw):
            return (f"holdover ran out: the bound grew past {_fmt_ns(model.bound_ref_ns)} + "
                    f"{_fmt_ns(self.config.max_holdover_growth_ns)}")
        if self.sources and self.reachable_count() == 0:
            heard = [s.last_answer_raw for s in self.sources.values() if s.last_answer_raw is not None]
            if not heard:
                return "no answer from any source yet"
            return f"no answer from any source for {(now_raw - max(heard)) / NS_PER_S:.0f} s"
        if model.undecided_since is None and model.raw_ref is not None and not model.is_synchronised(now_raw):
            return f"no update for {(now_raw - model.raw_ref) / NS_PER_S:.0f} s"
        return model.reason

    def tracking(self, now_raw: int, realtime_now_ns: int) -> TrackingStatus:
        """The typed status (tsq.sync.tracking). A source's offset_ns is its estimate of UTC minus the
        model's (before a model exists: minus the system clock's), small and positive when the source
        is ahead."""
        model = self.model
        utc = model.utc_ns(now_raw)
        known = model.raw_ref is not None
        model_offset = model.offset_ns(now_raw)
        ref = model_offset if model_offset is not None else realtime_now_ns - now_raw
        sources: List[SourceStatus] = []
        for src in self.sources.values():
            est = src.filter.estimate(now_raw)
            sources.append(SourceStatus(
                name=src.name, mode=src.mode, selection=src.selection, reachable=self.reachable(src),
                missed_polls=src.missed,
                offset_ns=None if est is None else est.offset_ns - ref, delay_ns=src.last_delay_ns,
                jitter_ns=None if est is None else round(est.jitter_ns), reach=src.poll.reach,
                samples=len(src.filter.samples),
                last_sample_age_s=None if est is None else _age_s(now_raw, est.last_sample_raw),
                stratum=src.stratum, distance_ns=None if est is None else round(est.distance_ns),
                freq_ppm=None if est is None else round(est.freq_ppb / 1000.0, 6),
                poll_s=src.poll.interval_ns / NS_PER_S, last_reason=src.last_reason))
        return TrackingStatus(
            state=model.state(now_raw), reason=self._reason(now_raw), utc_ns=utc, leap=model.leap(),
            system_offset_ns=None if utc is None else realtime_now_ns - utc,
            freq_ppm=round(model.freq_ppm, 6) if known else None,
            freq_error_ppm=round(model.freq_error_ppm, 6) if known else None,
            error_bound_ns=model.error_bound_ns(now_raw),
            last_update_utc_ns=None if model.raw_ref is None else model.raw_ref + model.offset_ref,
            last_update_age_s=None if model.raw_ref is None else _age_s(now_raw, model.raw_ref),
            poll_s=self.poll_s(), holdover_growth_ppb=round(model.growth_ppb, 3) if known else None,
            configured=len(self.sources), reachable=self.reachable_count(), agreeing=len(self.agreeing),
            quorum=self.quorum, minsources=self.config.minsources, sources=tuple(sources))
