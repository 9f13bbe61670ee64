"""The engine facade driven by hand (no simulator): configuration refusals, reasons, reachability,
quorum arithmetic, and the corners the scenarios do not reach."""

from __future__ import annotations

from typing import Tuple

import pytest

from tsq.sync.engine import Engine, _fmt_ns, _leap_from
from tsq.sync.exchange import Exchange
from tsq.sync.filter import Sample, SourceFilter
from tsq.sync.fitting import signs_look_random
from tsq.sync.select import select

NS = 1_000_000_000
BASE = 1_790_000_000 * NS          # UTC - raw


def exchange(name: str, t: int, error_ns: int = 0, delay_ns: int = 100_000,
             metadata: Tuple[Tuple[str, str], ...] = ()) -> Exchange:
    half = delay_ns // 2
    return Exchange(name, "datagram", t, BASE + error_ns + t + half, BASE + error_ns + t + half,
                    t + delay_ns, metadata=metadata)


def feed(e: Engine, name: str, t0: int, count: int = 4, error_ns: int = 0, step: int = NS) -> int:
    t = t0
    for _ in range(count):
        e.on_exchange(exchange(name, t, error_ns), t + 100_000)
        t += step
    return t


def test_configuration_refusals() -> None:
    with pytest.raises(ValueError, match="minpoll 5 > maxpoll 3"):
        Engine(minpoll=5, maxpoll=3)
    with pytest.raises(ValueError, match="minsources 0 < 1"):
        Engine(minsources=0)
    assert Engine().poll_s() is None
    assert Engine(holdover_after_s=None).config.holdover_after_s is None     # None overrides ignored


def test_quorum_is_a_strict_majority_of_the_configured_sources() -> None:
    e = Engine()
    expected = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3}
    for n in range(1, 6):
        e.add_source(f"s{n}")
        assert e.quorum == expected[n]


def test_reason_before_any_answer_and_after_silence() -> None:
    e = Engine()
    e.add_source("a")
    assert e.tracking(0, BASE).reason == "no answer from any source yet"
    e.on_timeout("a", NS)
    assert e.tracking(3 * NS, BASE).reason == "no answer from any source yet"
    e = Engine()
    t = feed(e, "a", 10 * NS)
    up = e.update(t)
    assert up is not None and up.decided and (up.configured, up.reachable, up.agreeing) == (1, 1, 1)
    e.on_timeout("a", t + NS)
    assert e.update(t + NS) is None                  # one miss: still reachable, nothing new
    e.on_timeout("a", t + 2 * NS)
    up = e.update(t + 2 * NS)
    assert up is not None and not up.decided and up.reason == "no answer from any source"
    st = e.tracking(t + 10 * NS, BASE + t)
    assert st.state == "holdover" and st.reason == "no answer from any source for 11 s"


def test_holdover_runs_out_and_says_so() -> None:
    e = Engine()
    t = feed(e, "a", 10 * NS)
    assert e.update(t) is not None
    later = t + 30 * 3600 * NS                       # 100 ms of growth at ~1 ppm: ~28 h
    st = e.tracking(later, BASE + later)
    assert st.state == "unsynchronised" and st.utc_ns is None and st.error_bound_ns is None
    assert st.reason.startswith("holdover ran out: the bound grew past ") and st.reason.endswith("+ 100.0 ms")
    assert e.export_drift(later, BASE + later) is None


def test_backstop_holdover_for_a_source_that_answers_but_is_never_accepted() -> None:
    e = Engine(holdover_after_s=5.0)
    t = feed(e, "a", 10 * NS)
    assert e.update(t) is not None
    st = e.tracking(t + 6 * NS, BASE + t)
    assert st.state == "holdover" and st.reason == "no update for 6 s"


def test_minsources_above_the_configured_count_never_synchronises_and_says_why() -> None:
    e = Engine(minsources=2)
    t = feed(e, "a", 10 * NS)
    up = e.update(t)
    assert up is not None and not up.decided
    assert up.reason == "only 1 of 1 sources reachable, minsources 2"
    e3 = Engine(minsources=3)
    for name, error in (("a", 0), ("b", 0), ("c", 50_000_000)):
        t = feed(e3, name, 10 * NS, error_ns=error)
    up = e3.update(t)
    assert up is not None and up.reason == "only 2 of 3 sources agree, minsources 3"
    e2 = Engine(minsources=2)
    e2.add_source("b")
    t = feed(e2, "a", 10 * NS)
    up = e2.update(t)
    assert up is not None and up.reason == "only 1 of 2 sources reachable, minsources 2"


def test_reachable_but_not_yet_usable() -> None:
    e = Engine()
    e.on_exchange(exchange("a", 10 * NS), 10 * NS + 100_000)
    up = e.update(11 * NS)
    assert up is not None and up.reason == "1 of 1 sources reachable, none usable yet"


def test_misses_allowed_grow_with_loss_up_to_the_reach_register() -> None:
    e = Engine()
    e.add_source("a")
    src = e.sources["a"]
    assert e.misses_allowed(src) == 2
    src.loss = 0.1
    assert e.misses_allowed(src) == 3                # 0.1^3 = 0.001
    src.loss = 0.36
    assert e.misses_allowed(src) == 7
    src.loss = 0.5
    assert e.misses_allowed(src) == 8
    src.loss = 1.0
    assert e.misses_allowed(src) == 8


def test_distrusted_majority_among_the_rest_cannot_refine() -> None:
    # a, b, c agree; d lies; then a and b die: c alone refines; d (a falseticker) never takes part.
    e = Engine(unreachable_polls=1)
    t = 10 * NS
    for name in "abc":
        feed(e, name, t)
    feed(e, "d", t, error_ns=50_000_000)
    t += 5 * NS
    up = e.update(t)
    assert up is not None and up.decided and up.falsetickers == ("d",)
    for name in "ab":
        e.on_timeout(name, t + NS)
    t = feed(e, "c", t + 2 * NS, count=1)
    feed(e, "d", t, count=1, error_ns=50_000_000)
    up = e.update(t + NS)
    assert up is not None and up.decided and up.reason.startswith("1 of 4 sources agree, inside")
    assert e.sources["d"].selection == "falseticker"
    e.on_timeout("c", t + 2 * NS)
    up = e.update(t + 2 * NS)
    assert up is not None and not up.decided
    assert up.reason == "no 3 of 4 sources agree, and d stays a falseticker until 3 do"


def test_helpers_for_words_and_metadata() -> None:
    assert (_fmt_ns(12_000), _fmt_ns(2_500_000), _fmt_ns(-3.5e9)) == ("12 us", "2.5 ms", "-3.50 s")
    assert _leap_from((("x",), ("site", "lab"), ("leap", "insert"))) == 1
    assert _leap_from([3, ("LEAP", " 2 ")]) == 2
    assert _leap_from((("leap", "maybe"),)) is None and _leap_from(None) is None


def test_export_prefers_the_long_line_only_when_it_is_better() -> None:
    e = Engine()
    t = feed(e, "a", 10 * NS, count=8)
    assert e.update(t) is not None
    model_se = e.model.freq_se_ppb
    for i in range(6):                                # a wildly scattered long line: worse
        e.frequency.points.append((i * 60 * NS, (-1) ** i * 10**9))
    rec = e.export_drift(t, BASE + t)
    assert rec is not None and rec.freq_se_ppb == model_se
    e.frequency.points.clear()
    for i in range(6):                                # a clean one: better
        e.frequency.points.append((i * 600 * NS, 7 * 600 * i + (1 if i % 2 else -1)))
    rec = e.export_drift(t, BASE + t)
    assert rec is not None and abs(rec.freq_ppb - 7.0) < 0.01 and rec.freq_se_ppb < model_se


def test_filter_reset_and_runs_test_corners() -> None:
    f = SourceFilter()
    f.add(Sample(0, BASE, 100_000))
    f.reset()
    assert f.samples == [] and f.estimate(0) is None
    assert signs_look_random([True, True]) and not signs_look_random([True] * 5)


def test_select_with_nobody() -> None:
    sel = select([], 3)
    assert not sel.decided and sel.reason == "no usable source"


def test_a_source_coming_back_without_a_fresh_sample_does_not_confirm_the_model() -> None:
    e = Engine()
    t = 10 * NS
    for name in "abc":
        feed(e, name, t)
    t += 5 * NS
    assert e.update(t) is not None and e.model.is_synchronised(t)
    for k in (1, 2):
        for name in "abc":
            e.on_timeout(name, t + k * NS)
    up = e.update(t + 3 * NS)
    assert up is not None and not up.decided and up.state == "holdover"
    # a and b answer again, but with exchanges §6.6 rejects: reachable again, nothing measured.
    for name in "ab":
        bad = Exchange(name, "datagram", t + 4 * NS, BASE + t + 4 * NS + 60_000, BASE + t + 4 * NS + 50_000,
                       t + 4 * NS + 100_000)
        assert not e.on_exchange(bad, t + 4 * NS + 100_000).accepted
    up = e.update(t + 5 * NS)
    assert up is not None and not up.decided and up.state == "holdover"
    assert e.tracking(t + 5 * NS, BASE + t).reachable == 2
    feed(e, "a", t + 6 * NS, count=1)                 # a fresh sample: confirmed again
    up = e.update(t + 7 * NS)
    assert up is not None and up.decided and up.refreshed and up.state == "synchronised"
    e.on_timeout("c", t + 8 * NS)                     # c was already unreachable: nothing new
    assert e.update(t + 8 * NS) is None
    while e.reachable(e.sources["b"]):               # its earlier misses made it look lossy: 3 now
        t += NS
        e.on_timeout("b", t + 8 * NS)
    up = e.update(t + 9 * NS)                         # b leaves; a alone keeps the confirmation
    assert up is not None and up.decided and not up.refreshed and up.state == "synchronised"


def test_a_removed_source_no_longer_counts_or_votes() -> None:
    e = Engine()
    for name in ("a", "b", "c"):
        e.add_source(name)
    assert e.quorum == 2
    e.remove_source("b")
    e.remove_source("never-there")         # nothing to remove: no error
    assert sorted(e.sources) == ["a", "c"] and e.quorum == 2
    t = feed(e, "a", 10 * NS)
    up = e.update(t)
    assert up is not None and up.configured == 2
