"""What the engine reports (sans-IO): typed tracking and per-source status, and their JSON.

`Engine.tracking(now_raw, realtime_ns)` builds a `TrackingStatus`; `to_json()` gives the status
object of docs/internals.md ("Control socket"): today's keys, with the same names and units, plus
the selection's counts (`configured`, `reachable`, `agreeing`, `quorum`, `minsources`) and
`synchronised`. Times stay integer ns here; `to_json()` turns UTC instants into ISO strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from tsq.timefmt import utc_iso

STATUS_VERSION = 1


@dataclass(frozen=True)
class SourceStatus:
    name: str
    mode: Optional[str]
    selection: str                      # selected | combined | candidate | falseticker | unusable
    reachable: bool                     # answered recently enough to vote (docs/engine.md)
    missed_polls: int                   # polls in a row without an answer
    offset_ns: Optional[int]            # the source's UTC minus the model's (or the system clock's)
    delay_ns: Optional[int]             # of the last exchange
    jitter_ns: Optional[int]
    reach: int                          # 8-bit register, newest poll in bit 0
    samples: int
    last_sample_age_s: Optional[float]
    stratum: Optional[int]
    distance_ns: Optional[int]
    freq_ppm: Optional[float]
    poll_s: float
    last_reason: str

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name, "mode": self.mode, "selection": self.selection, "offset_ns": self.offset_ns,
            "delay_ns": self.delay_ns, "jitter_ns": self.jitter_ns, "reach": self.reach,
            "samples": self.samples, "last_sample_age_s": self.last_sample_age_s, "stratum": self.stratum,
            "distance_ns": self.distance_ns, "freq_ppm": self.freq_ppm, "poll_s": self.poll_s,
            "last_reason": self.last_reason, "reachable": self.reachable, "missed_polls": self.missed_polls,
        }


@dataclass(frozen=True)
class TrackingStatus:
    state: str                          # synchronised | holdover | unsynchronised
    reason: str                         # why, in words ("no answer from any source for 130 s")
    utc_ns: Optional[int]               # the model's UTC now (None when unsynchronised)
    leap: int
    system_offset_ns: Optional[int]     # realtime - model UTC
    freq_ppm: Optional[float]
    freq_error_ppm: Optional[float]
    error_bound_ns: Optional[int]
    last_update_utc_ns: Optional[int]
    last_update_age_s: Optional[float]
    poll_s: Optional[float]
    holdover_growth_ppb: Optional[float]
    configured: int                     # sources the engine was given
    reachable: int                      # of those, answering (docs/engine.md: "reachable")
    agreeing: int                       # of those, in the last confirmed selection
    quorum: int                         # agreeing sources needed to move the model past its bound
    minsources: int                     # agreeing sources needed for any update
    sources: Tuple[SourceStatus, ...] = ()

    @property
    def synchronised(self) -> bool:
        """What outputs check before claiming sync (chronyd, adjtimex, devices' flag, metrics)."""
        return self.state == "synchronised"

    def to_json(self) -> Dict[str, Any]:
        return {
            "version": STATUS_VERSION, "state": self.state, "time_utc": utc_iso(self.utc_ns),
            "leap": self.leap, "system_offset_ns": self.system_offset_ns, "freq_ppm": self.freq_ppm,
            "freq_error_ppm": self.freq_error_ppm, "error_bound_ns": self.error_bound_ns,
            "last_update_utc": utc_iso(self.last_update_utc_ns), "last_update_age_s": self.last_update_age_s,
            "poll_s": self.poll_s, "reason": self.reason, "holdover_growth_ppb": self.holdover_growth_ppb,
            "synchronised": self.synchronised, "configured": self.configured, "reachable": self.reachable,
            "agreeing": self.agreeing, "quorum": self.quorum, "minsources": self.minsources,
            "sources": [s.to_json() for s in self.sources],
        }
