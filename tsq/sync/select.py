"""Source selection across servers (sans-IO): interval intersection, then weighted combination.

Each usable source offers an interval [offset - distance, offset + distance] that contains the true
offset if the source tells the truth (NTP's correctness interval). As in RFC 5905's intersection
algorithm, a sweep finds the hull of the points covered by the most intervals (all, then one fewer,
...). The sources whose intervals reach that region are the truechimers; the others are
falsetickers. A decision needs the truechimers to be a strict majority of the
`quorum` (the sources that are usable or still starting up); two equally large disjoint cliques, or
no majority, mean the engine cannot decide and must not follow anyone.

Survivors are combined with weights 1/distance^2 (frequency: 1/se^2). Advisory Clock Quality
(`claimed_error_ns`) can lower a source's weight, by at most a factor of four; it never changes any
interval, so a server cannot talk its way past the measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Candidate:
    name: str
    offset_ns: int                    # UTC - raw at the common instant
    distance_ns: float                # half-width of its correctness interval
    freq_ppb: float
    freq_se_ppb: float
    claimed_error_ns: float = 0.0     # from Clock Quality (advisory), 0 when absent
    stratum: Optional[int] = None     # from Time Source Info (advisory; ties only)


@dataclass(frozen=True)
class Selection:
    decided: bool
    reason: str
    offset_ns: Optional[int] = None   # combined UTC - raw
    bound_ns: Optional[float] = None  # |combined - truth| <= bound while the truechimers are right
    lo_ns: Optional[int] = None       # the hull [lo, hi] that holds the truth while they are right
    hi_ns: Optional[int] = None
    freq_ppb: Optional[float] = None
    freq_se_ppb: Optional[float] = None
    selected: Optional[str] = None    # the best survivor (smallest distance)
    combined: Tuple[str, ...] = ()    # all survivors, selected included
    falsetickers: Tuple[str, ...] = ()


def intersect(cands: Sequence[Candidate], needed: int) -> Optional[Tuple[int, int]]:
    """The hull [lo, hi] of the points covered by at least `needed` intervals (RFC 5905 style).

    None when no point is covered that often. Offsets are handled relative to the first
    candidate so the floats stay small.
    """
    ref = cands[0].offset_ns
    edges: List[Tuple[float, int]] = []
    for c in cands:
        mid = float(c.offset_ns - ref)
        edges.append((mid - c.distance_ns, -1))   # starts sort before ends: touching counts
        edges.append((mid + c.distance_ns, +1))
    edges.sort()
    lo = _first_covered(edges, needed, -1)
    if lo is None:
        return None
    hi = _first_covered(edges[::-1], needed, +1)
    assert hi is not None                 # covered from the left means covered from the right
    return ref + math.floor(lo), ref + math.ceil(hi)


def _first_covered(edges: Sequence[Tuple[float, int]], needed: int, sign: int) -> Optional[float]:
    """Sweep `edges` in order; the first x where `needed` intervals overlap (sign: -1 counts starts
    up, for the left-to-right sweep; +1 for the right-to-left one)."""
    count = 0
    for x, kind in edges:
        count += sign * kind
        if count >= needed:
            return x
    return None


def select(cands: Sequence[Candidate], quorum: int) -> Selection:
    """Pick the truechimers among `cands` (a majority of `quorum` needed) and combine them.

    Tries the largest agreement first: all candidates, then one fewer, down to a bare majority.
    The truth lies in [lo, hi] whenever the truechimers are at least that many.
    """
    if not cands:
        return Selection(False, "no usable source")
    quorum = max(quorum, len(cands))
    region: Optional[Tuple[int, int]] = None
    needed = len(cands)
    while 2 * needed > quorum:
        region = intersect(cands, needed)
        if region is not None:
            break
        needed -= 1
    if region is None:
        return Selection(False, f"cannot decide: no {quorum // 2 + 1} of {quorum} sources agree")
    lo, hi = region
    # Integer differences first: offsets near 1.8e18 ns do not survive a float conversion.
    survivors = [c for c in cands if c.offset_ns - hi <= c.distance_ns and lo - c.offset_ns <= c.distance_ns]
    liars = tuple(c.name for c in cands if c not in survivors)
    ref = survivors[0].offset_ns
    # Weight by 1/distance^2; a server that itself claims a larger error gets less say.
    weights = [1.0 / max(c.distance_ns + min(c.claimed_error_ns, c.distance_ns), 1.0) ** 2
               for c in survivors]
    total = sum(weights)
    combined = ref + round(sum(w * (c.offset_ns - ref) for w, c in zip(weights, survivors)) / total)
    combined = min(max(combined, lo), hi)
    # Truth is in [lo, hi] while the agreeing majority is right.
    bound = float(max(combined - lo, hi - combined))
    fweights = [1.0 / max(c.freq_se_ppb, 1e-3) ** 2 for c in survivors]
    ftotal = sum(fweights)
    freq = sum(w * c.freq_ppb for w, c in zip(fweights, survivors)) / ftotal
    best_src = min(survivors, key=lambda c: (c.distance_ns, c.stratum if c.stratum is not None else 16))
    return Selection(
        True, f"{len(survivors)} of {quorum} sources agree", offset_ns=combined, bound_ns=bound,
        lo_ns=lo, hi_ns=hi,
        freq_ppb=freq, freq_se_ppb=math.sqrt(1.0 / ftotal), selected=best_src.name,
        combined=tuple(c.name for c in survivors), falsetickers=liars)
