"""Interval intersection and combination (tsq.sync.select)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tsq.sync.select import Candidate, select

BIG = 1_790_000_000_000_000_000


def cand(name: str, offset: int, dist: float, **kw: object) -> Candidate:
    return Candidate(name, BIG + offset, dist, 10.0, 1.0, **kw)  # type: ignore[arg-type]


def test_one_liar_among_three_is_a_falseticker() -> None:
    sel = select([cand("a", 0, 50_000), cand("b", 3_000, 60_000), cand("c", 100_000_000, 50_000)], 3)
    assert sel.decided
    assert sel.falsetickers == ("c",)
    assert set(sel.combined) == {"a", "b"}
    assert sel.offset_ns is not None and abs(sel.offset_ns - BIG) < 3_000
    assert sel.bound_ns is not None and abs(sel.offset_ns - BIG) <= sel.bound_ns <= 60_000


def test_two_of_four_lying_together_cannot_be_decided() -> None:
    sel = select([cand("a", 0, 50_000), cand("b", 1_000, 50_000),
                  cand("c", 100_000_000, 50_000), cand("d", 100_001_000, 50_000)], 4)
    assert not sel.decided
    assert "cannot decide" in sel.reason
    assert sel.offset_ns is None


def test_pending_sources_count_in_the_quorum() -> None:
    # One source heard, two still starting: one voice is not a majority of three.
    assert not select([cand("a", 0, 50_000)], 3).decided
    assert select([cand("a", 0, 50_000), cand("b", 10, 50_000)], 3).decided


def test_claimed_quality_lowers_weight_but_never_moves_intervals() -> None:
    plain = select([cand("a", 0, 10_000), cand("b", 8_000, 10_000)], 2)
    modest = select([cand("a", 0, 10_000), cand("b", 8_000, 10_000, claimed_error_ns=1e9)], 2)
    assert plain.offset_ns is not None and modest.offset_ns is not None
    assert modest.offset_ns < plain.offset_ns          # b's say shrank ...
    assert modest.offset_ns >= BIG + 8_000 / 5 - 1     # ... by at most a factor four in weight
    # A server claiming perfection gains nothing over the measurement.
    boastful = select([cand("a", 0, 10_000), cand("b", 8_000, 10_000, claimed_error_ns=0.0)], 2)
    assert boastful.offset_ns == plain.offset_ns


@given(st.lists(st.tuples(st.integers(-10**9, 10**9), st.floats(0, 1e8)), min_size=1, max_size=9),
       st.integers(0, 5))
def test_selection_is_total_and_consistent(intervals: list[tuple[int, float]], pending: int) -> None:
    cands = [cand(f"s{i}", off, d) for i, (off, d) in enumerate(intervals)]
    sel = select(cands, len(cands) + pending)
    if not sel.decided:
        return
    assert sel.offset_ns is not None and sel.bound_ns is not None
    assert set(sel.combined) | set(sel.falsetickers) == {c.name for c in cands}
    assert not set(sel.combined) & set(sel.falsetickers)
    assert 2 * len(sel.combined) > len(cands) + pending
    assert sel.bound_ns >= 0


@given(st.integers(-10**8, 10**8), st.lists(st.tuples(st.floats(-1, 1), st.floats(1e3, 1e7)),
                                             min_size=1, max_size=7))
def test_truth_within_bound_when_every_interval_holds_it(truth: int,
                                                         shapes: list[tuple[float, float]]) -> None:
    # Every source honest (truth inside its interval): a decision, and the bound holds the truth.
    cands = [cand(f"s{i}", truth + round(pos * d * 0.999), d) for i, (pos, d) in enumerate(shapes)]
    sel = select(cands, len(cands))
    assert sel.decided and not sel.falsetickers
    assert sel.offset_ns is not None and sel.bound_ns is not None
    assert abs(sel.offset_ns - (BIG + truth)) <= sel.bound_ns + 1
