"""The sync engine facade (sans-IO): exchanges in, a time model and status out.

    engine = Engine(minpoll=0, maxpoll=6)          # or Engine(EngineConfig(...))
    engine.add_source("127.0.0.1:4433")
    due = engine.next_poll(name, now_raw)          # raw ns when to ask that server next
    outcome = engine.on_exchange(ex, now_raw)      # per sample: accepted or why not (field log)
    engine.on_timeout(name, now_raw)               # no answer (reach register)
    update = engine.update(now_raw)                # selection + combination when there is news
    engine.model.utc_ns(raw), .error_bound_ns(raw), .state(raw), .leap()
    engine.status(now_raw, realtime_ns)            # the status JSON's tracking and `sources` parts

Every time is an argument; nothing here reads a clock. See docs/engine.md.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

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
from tsq.timefmt import utc_iso

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
    max_bound_ns: int = 100_000_000        # bound beyond this: unsynchronised
    holdover_after_s: Optional[float] = None   # default 6 x 2**maxpoll
    pending_timeouts: int = 3              # a never-heard source stops blocking the quorum after this


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
    timeouts_in_row: int = 0
    ever_usable: bool = False
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


class Engine:
    def __init__(self, config: Optional[EngineConfig] = None, **overrides: Any) -> None:
        cfg = config or EngineConfig()
        if overrides:
            cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if cfg.minpoll > cfg.maxpoll:
            raise ValueError(f"minpoll {cfg.minpoll} > maxpoll {cfg.maxpoll}")
        self.config = cfg
        holdover = cfg.holdover_after_s if cfg.holdover_after_s is not None else 6.0 * 2.0 ** cfg.maxpoll
        self.model = ClockModel(ModelConfig(
            max_clock_error_ppb=cfg.max_clock_error_ppb, max_bound_ns=cfg.max_bound_ns,
            holdover_after_ns=int(holdover * NS_PER_S)))
        self._filter_config = FilterConfig(
            max_samples=cfg.max_samples, max_freq_ppm=cfg.max_freq_ppm,
            max_clock_error_ppb=cfg.max_clock_error_ppb)
        self._poll_config = PollConfig(
            minpoll=cfg.minpoll, maxpoll=cfg.maxpoll, burst_samples=cfg.burst_samples,
            burst_max=cfg.burst_max, burst_spacing_ns=cfg.burst_spacing_ns)
        self.sources: Dict[str, _Source] = {}
        self.last_selection: Optional[Selection] = None
        self._news = False

    # ------------------------------------------------------------------------------ sources
    def add_source(self, name: str) -> None:
        if name not in self.sources:
            self.sources[name] = _Source(name, SourceFilter(self._filter_config),
                                         PollController(self._poll_config))

    def _source(self, name: str) -> _Source:
        self.add_source(name)
        return self.sources[name]

    def next_poll(self, name: str, now_raw: int) -> int:
        """Raw ns at which to poll `name` next (<= now_raw: now)."""
        return self._source(name).poll.next_poll(now_raw)

    def on_timeout(self, name: str, now_raw: int) -> None:
        src = self._source(name)
        src.poll.on_timeout(now_raw)
        src.timeouts_in_row += 1

    def on_exchange(self, ex: Exchange, now_raw: int) -> SampleOutcome:
        """Check and filter one exchange; the model changes only in update()."""
        src = self._source(ex.server)
        src.mode = ex.mode
        src.timeouts_in_row = 0
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
        jitter = 0.0
        if est is not None:
            # A sample with excess delay may miss by half of it without anything being wrong.
            jitter = max(est.jitter_ns, (delay - est.min_delay_ns) / 2, self._filter_config.sigma_floor_ns)
        src.poll.on_sample(now_raw, verdict.accepted, verdict.prediction_error_ns, jitter,
                           step=verdict.reason.startswith("step"))
        if verdict.accepted:
            self._news = True
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
        if est is None or est.samples < self.config.min_samples or src.poll.reach == 0:
            return None
        if est.distance_ns > self.config.max_bound_ns:
            return None
        return est

    def update(self, now_raw: int) -> Optional[ModelUpdate]:
        """Run selection and combination if a sample was accepted since the last round."""
        if not self._news:
            return None
        estimates: Dict[str, SourceEstimate] = {}
        pending = 0
        for src in self.sources.values():
            est = self._usable(src, now_raw)
            if est is not None:
                estimates[src.name] = est
                src.ever_usable = True
            elif not src.ever_usable and src.timeouts_in_row < self.config.pending_timeouts:
                pending += 1      # still starting: it gets a vote before anyone is believed
            src.selection = "candidate" if est is not None else "unusable"
        if not estimates:
            return None
        self._news = False
        cands = [Candidate(name, est.offset_ns, est.distance_ns, est.freq_ppb, est.freq_se_ppb,
                           self.sources[name].claimed_error_ns, self.sources[name].stratum)
                 for name, est in estimates.items()]
        sel = select(cands, len(cands) + pending)
        self.last_selection = sel
        if sel.decided:
            assert sel.offset_ns is not None and sel.bound_ns is not None
            assert sel.freq_ppb is not None and sel.freq_se_ppb is not None
            for name in sel.combined:
                self.sources[name].selection = "combined"
            for name in sel.falsetickers:
                self.sources[name].selection = "falseticker"
            if sel.selected is not None:
                self.sources[sel.selected].selection = "selected"
            self.model.update(now_raw, sel.offset_ns, sel.freq_ppb, sel.freq_se_ppb, sel.bound_ns,
                              self._leap(sel.combined), sel.reason)
        else:
            self.model.mark_undecided(now_raw, sel.reason)
        known = self.model.raw_ref is not None
        return ModelUpdate(
            raw_ns=now_raw, decided=sel.decided, reason=sel.reason, state=self.model.state(now_raw),
            offset_ns=self.model.offset_ns(now_raw),
            freq_ppm=self.model.freq_ppm if known else None,
            freq_error_ppm=self.model.freq_error_ppm if known else None,
            error_bound_ns=self.model.error_bound_ns(now_raw), sources=len(sel.combined),
            selected=sel.selected, falsetickers=sel.falsetickers, leap=self.model.leap())

    def _leap(self, names: Tuple[str, ...]) -> int:
        """A leap announcement counts when more than half of the survivors make it."""
        votes = Counter(self.sources[n].leap for n in names)
        value, count = votes.most_common(1)[0]
        return value if 2 * count > len(names) else LEAP_NONE

    # ------------------------------------------------------------------------------ status
    def poll_s(self) -> Optional[float]:
        """The poll interval of the selected source (else the shortest), seconds."""
        if not self.sources:
            return None
        sel = self.last_selection
        if sel is not None and sel.decided and sel.selected in self.sources:
            return self.sources[sel.selected].poll.interval_ns / NS_PER_S
        return min(s.poll.interval_ns for s in self.sources.values()) / NS_PER_S

    def status(self, now_raw: int, realtime_now_ns: int) -> Dict[str, Any]:
        """The tracking part and `sources` of the status JSON (docs/internals.md).

        A source's offset_ns is its estimate of UTC minus the model's (before a model exists:
        minus the system clock's), so it is small and positive when the source is ahead.
        """
        model = self.model
        utc = model.utc_ns(now_raw)
        known = model.raw_ref is not None
        model_offset = model.offset_ns(now_raw)
        ref = model_offset if model_offset is not None else realtime_now_ns - now_raw
        sources: List[Dict[str, Any]] = []
        for src in self.sources.values():
            est = src.filter.estimate(now_raw)
            sources.append({
                "name": src.name, "mode": src.mode, "selection": src.selection,
                "offset_ns": None if est is None else est.offset_ns - ref,
                "delay_ns": src.last_delay_ns,
                "jitter_ns": None if est is None else round(est.jitter_ns),
                "reach": src.poll.reach, "samples": len(src.filter.samples),
                "last_sample_age_s": None if est is None
                else round((now_raw - est.last_sample_raw) / NS_PER_S, 3),
                "stratum": src.stratum,
                "distance_ns": None if est is None else round(est.distance_ns),
                "freq_ppm": None if est is None else round(est.freq_ppb / 1000.0, 6),
                "poll_s": src.poll.interval_ns / NS_PER_S,
                "last_reason": src.last_reason,
            })
        last_utc = None if model.raw_ref is None else model.raw_ref + model.offset_ref
        return {
            "version": 1, "state": model.state(now_raw), "time_utc": utc_iso(utc), "leap": model.leap(),
            "system_offset_ns": None if utc is None else realtime_now_ns - utc,
            "freq_ppm": round(model.freq_ppm, 6) if known else None,
            "freq_error_ppm": round(model.freq_error_ppm, 6) if known else None,
            "error_bound_ns": model.error_bound_ns(now_raw),
            "last_update_utc": utc_iso(last_utc),
            "last_update_age_s": None if model.raw_ref is None
            else round((now_raw - model.raw_ref) / NS_PER_S, 3),
            "poll_s": self.poll_s(), "reason": model.reason,
            "holdover_growth_ppb": round(model.growth_ppb, 3) if known else None,
            "sources": sources,
        }
