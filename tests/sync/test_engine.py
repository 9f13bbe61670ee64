"""The sync engine against simulated clocks, servers and networks: known truth in, error out."""

from __future__ import annotations

import json

import pytest

from tsq.sync.engine import Engine, EngineConfig
from tsq.sync.exchange import Exchange
from tsq.testing.simclock import LocalClock, SimPath, SimServer, Simulation
from tsq.wire import ClockQuality, TimeSourceInfo

NS = 1_000_000_000
LOOPBACK = SimPath(delay_ns=40_000, jitter_ns=3_000)


def sim(servers: list[tuple[SimServer, SimPath]], clock: LocalClock | None = None, seed: int = 1,
        **config: object) -> Simulation:
    engine = Engine(EngineConfig(**config))  # type: ignore[arg-type]
    return Simulation(engine, clock or LocalClock(freq_ppm=17.0, seed=seed), servers, seed=seed)


def now_raw(s: Simulation) -> int:
    return s.clock.raw_at(s.now)


def test_first_synchronised_estimate_is_fast_on_loopback() -> None:
    s = sim([(SimServer("a"), LOOPBACK)])
    r = s.run(5)
    assert r.first_sync_s is not None and r.first_sync_s < 0.030
    first = next(u for _, u in r.updates if u.decided)
    assert first.state == "synchronised"
    assert sum(1 for _, o in r.outcomes if o.raw_ns <= first.raw_ns) <= 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simple_scenario_bound_always_holds(seed: int) -> None:
    s = sim([(SimServer("a", stamp_noise_ns=200), LOOPBACK)], LocalClock(freq_ppm=-42.0, seed=seed),
            seed=seed)
    summary = s.run(3 * 3600).summary()
    assert summary["contained"] == 1.0
    assert summary["synchronised"] == 1.0
    assert summary["p50_ns"] < 5_000          # microseconds on a 80 us loopback round trip
    assert s.engine.tracking(now_raw(s), s.now).to_json()["poll_s"] == 64.0   # settled at maxpoll


def test_one_server_off_by_100ms_among_three_is_a_falseticker() -> None:
    servers = [(SimServer("good1"), LOOPBACK), (SimServer("good2"), SimPath(60_000, jitter_ns=3_000)),
               (SimServer("liar", error_ns=100_000_000), LOOPBACK)]
    s = sim(servers)
    r = s.run(2 * 3600)
    decided = [u for _, u in r.updates if u.decided]
    assert decided and all("liar" in u.falsetickers for u in decided)
    summary = r.summary()
    assert summary["contained"] == 1.0
    assert summary["max_ns"] < 100_000           # never pulled towards the liar ...
    assert summary["p99_ns"] < 10_000            # ... and within microseconds of the truth
    status = s.engine.tracking(now_raw(s), s.now).to_json()
    selection = {src["name"]: src["selection"] for src in status["sources"]}
    assert selection["liar"] == "falseticker"
    assert {selection["good1"], selection["good2"]} == {"selected", "combined"}
    liar = next(src for src in status["sources"] if src["name"] == "liar")
    assert abs(liar["offset_ns"] - 100_000_000) < 100_000   # shown relative to the model


def test_two_of_four_lying_the_same_way_cannot_be_decided() -> None:
    servers = [(SimServer("good1"), LOOPBACK), (SimServer("good2"), LOOPBACK),
               (SimServer("liar1", error_ns=100_000_000), LOOPBACK),
               (SimServer("liar2", error_ns=100_000_500), LOOPBACK)]
    s = sim(servers)
    r = s.run(1800)
    assert r.first_sync_s is None
    assert all(rec.state == "unsynchronised" and rec.error_ns is None for rec in r.records)
    assert r.updates and not any(u.decided for _, u in r.updates)
    status = s.engine.tracking(now_raw(s), s.now).to_json()
    assert status["state"] == "unsynchronised"
    assert "cannot decide" in status["reason"]
    assert all(src["selection"] == "candidate" for src in status["sources"])


def test_liars_appearing_after_sync_mean_holdover_not_following() -> None:
    # Two of four servers step by 100 ms together an hour in: the engine must stop claiming sync.
    step = [(3600.0, 100_000_000)]
    servers = [(SimServer("good1"), LOOPBACK), (SimServer("good2"), LOOPBACK),
               (SimServer("bad1", steps=step), LOOPBACK), (SimServer("bad2", steps=step), LOOPBACK)]
    s = sim(servers)
    r = s.run(7200)
    late = [rec for rec in r.records if rec.t_s > 3900]
    assert late and all(rec.state != "synchronised" for rec in late)
    assert all(rec.error_ns is None or abs(rec.error_ns) < 1_000_000 for rec in r.records)
    assert r.summary()["contained"] == 1.0


def test_server_that_stops_answering_holdover_growing_bound_then_recovery() -> None:
    server = SimServer("a", down=[(1800.0, 5400.0)])
    s = sim([(server, SimPath(300_000, jitter_ns=30_000))],
            LocalClock(freq_ppm=25.0, wander_ppb_per_rt_s=0.3, seed=4), seed=4)
    s.run(4000)
    rate = s.engine.model.growth_ppb              # documented: 1 ppm + 3 x se(frequency)
    assert 1000 < rate < 1000 + 3 * 100
    assert s.engine.tracking(now_raw(s), s.now).to_json()["holdover_growth_ppb"] == round(rate, 3)
    r = s.run(4 * 3600 - 4000)
    by_t = {round(rec.t_s): rec for rec in r.records}
    assert by_t[1700].state == "synchronised"
    holdover = [rec for rec in r.records if 2400 <= rec.t_s <= 5400]
    assert holdover and all(rec.state == "holdover" for rec in holdover)
    bounds = [rec.bound_ns for rec in holdover if rec.bound_ns is not None]
    assert len(bounds) == len(holdover)
    assert bounds == sorted(bounds)               # grows ...
    growth_ppb = (bounds[-1] - bounds[0]) / (holdover[-1].t_s - holdover[0].t_s)
    assert abs(growth_ppb - rate) < 1             # ... at that rate
    assert by_t[5600].state == "synchronised"     # recovered
    assert by_t[5600].bound_ns is not None and by_t[5600].bound_ns < bounds[0]
    assert r.summary()["contained"] == 1.0


def test_lossy_jittery_path_stays_synchronised() -> None:
    path = SimPath(2_000_000, back_delay_ns=2_600_000, jitter_ns=400_000, loss=0.2)
    for seed in (1, 2):
        s = sim([(SimServer("a"), path), (SimServer("b"), SimPath(3_000_000, jitter_ns=600_000, loss=0.2))],
                LocalClock(freq_ppm=-30.0, wander_ppb_per_rt_s=1.0, seed=seed), seed=seed)
        r = s.run(4 * 3600)
        summary = r.summary(after_s=10)
        assert summary["synchronised"] >= 0.99, summary
        assert summary["contained"] >= 0.99, summary
        assert summary["p99_ns"] < 2_000_000, summary
        assert r.lost > 0


def test_wander_and_frequency_step_stay_inside_the_bound() -> None:
    clock = LocalClock(freq_ppm=12.0, wander_ppb_per_rt_s=3.0, freq_steps=[(4000.0, 1.5)], seed=9)
    s = sim([(SimServer("a", stamp_noise_ns=1_000), SimPath(500_000, jitter_ns=100_000))], clock, seed=9)
    summary = s.run(4 * 3600).summary()
    assert summary["contained"] >= 0.99
    assert summary["synchronised"] == 1.0


def test_a_single_server_that_steps_is_followed_after_a_few_samples() -> None:
    # Its clock was 5 ms off and gets corrected: the window restarts and the model follows.
    server = SimServer("a", error_ns=5_000_000, steps=[(1800.0, -5_000_000)])
    s = sim([(server, SimPath(300_000, jitter_ns=30_000))])
    r = s.run(3600)
    reasons = [o.reason for t, o in r.outcomes if t > 1800]
    assert any(x.startswith("offset spike") for x in reasons)
    assert any(x.startswith("step") for x in reasons)
    assert r.records[-1].error_ns is not None and abs(r.records[-1].error_ns) < 100_000
    restart = next(t for t, o in r.outcomes if o.reason.startswith("step"))
    assert restart - 1800 < 600                   # the poll shortens to confirm the step


def test_advisories_inform_but_do_not_override_and_leap_comes_from_metadata() -> None:
    boast = ClockQuality(clock_class=1, error_us=0, drift_ppb=0)
    meta = (("leap", "insert"),)
    servers = [(SimServer("a", metadata=meta, time_source=TimeSourceInfo(1, 1)), LOOPBACK),
               (SimServer("b", metadata=meta), LOOPBACK),
               (SimServer("boaster", error_ns=50_000_000, clock_quality=boast, metadata=meta,
                          time_source=TimeSourceInfo(1, 1)), LOOPBACK)]
    s = sim(servers)
    r = s.run(600)
    status = s.engine.tracking(now_raw(s), s.now).to_json()
    sel = {src["name"]: src for src in status["sources"]}
    assert sel["boaster"]["selection"] == "falseticker"
    assert sel["a"]["stratum"] == 1 and sel["b"]["stratum"] is None
    assert status["leap"] == 1 and s.engine.model.leap() == 1
    assert r.summary()["max_ns"] < 100_000


def test_status_has_the_documented_keys_and_is_json() -> None:
    s = sim([(SimServer("a"), LOOPBACK)])
    engine = s.engine
    empty = engine.tracking(now_raw(s), s.now).to_json()
    assert empty["state"] == "unsynchronised" and empty["time_utc"] is None
    s.run(120)
    raw = now_raw(s)
    st = engine.tracking(raw, s.now + 1234).to_json()              # system clock 1.234 us ahead of truth
    for key in ("version", "state", "time_utc", "leap", "system_offset_ns", "freq_ppm", "freq_error_ppm",
                "error_bound_ns", "last_update_utc", "last_update_age_s", "poll_s", "sources"):
        assert key in st
    assert st["state"] == "synchronised"
    assert abs(st["system_offset_ns"] - 1234) < 5_000
    assert abs(st["freq_ppm"] - -17.0) < 0.1           # raw runs 17 ppm fast: UTC - raw falls
    assert st["time_utc"].endswith("Z") and len(st["time_utc"]) == 30
    src = st["sources"][0]
    for key in ("name", "mode", "selection", "offset_ns", "delay_ns", "jitter_ns", "reach", "samples",
                "last_sample_age_s", "stratum"):
        assert key in src
    assert src["mode"] == "datagram" and src["reach"] == 255 and src["selection"] == "selected"
    json.dumps(st)


def test_sample_outcomes_for_the_field_log() -> None:
    engine = Engine(minpoll=1, maxpoll=3)
    assert engine.config.minpoll == 1 and engine.config.maxpoll == 3
    base = 1_790_000_000 * NS
    good = Exchange("s", "stream", 10 * NS, base + 10 * NS + 50_000, base + 10 * NS + 60_000,
                    10 * NS + 110_000)
    out = engine.on_exchange(good, 10 * NS + 110_000)
    assert out.accepted and out.reason == "ok" and out.relative_offset_ns is None
    assert out.offset_ns == base and out.delay_ns == 100_000
    bad = Exchange("s", "stream", 11 * NS, base + 11 * NS + 60_000, base + 11 * NS + 50_000,
                   11 * NS + 110_000)
    out = engine.on_exchange(bad, 11 * NS + 110_000)
    assert not out.accepted and out.reason.startswith("§6.6")
    for i in range(3):
        t = (12 + i) * NS
        engine.on_exchange(Exchange("s", "stream", t, base + t + 50_000, base + t + 60_000, t + 110_000),
                           t + 110_000)
    up = engine.update(15 * NS)
    assert up is not None and up.decided and up.state == "synchronised" and up.sources == 1
    assert engine.update(15 * NS) is None            # nothing new
    t = 16 * NS
    out = engine.on_exchange(Exchange("s", "stream", t, base + t + 52_000, base + t + 62_000,
                                      t + 110_000), t + 110_000)
    assert out.relative_offset_ns is not None and abs(out.relative_offset_ns - 2_000) < 500


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_wan_asymmetry_jitter_and_loss_bound_holds(seed: int) -> None:
    # 8 ms out, 11 ms back: a 1.5 ms error no two-way exchange can see; the bound must cover it.
    path = SimPath(8_000_000, back_delay_ns=11_000_000, jitter_ns=1_500_000, loss=0.05)
    s = sim([(SimServer("a"), path), (SimServer("b"), SimPath(9_000_000, jitter_ns=1_000_000, loss=0.05))],
            LocalClock(freq_ppm=8.0, wander_ppb_per_rt_s=1.0, seed=seed), seed=seed)
    summary = s.run(3 * 3600).summary()
    assert summary["contained"] >= 0.99, summary
    assert summary["synchronised"] >= 0.99, summary
    assert summary["max_ns"] < 5_000_000, summary
