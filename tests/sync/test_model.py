"""The time model: utc_ns, the growing bound, states and leap (tsq.sync.model)."""

from __future__ import annotations

from tsq.sync.model import ClockModel, ModelConfig

NS = 1_000_000_000
OFFSET = 1_790_000_000 * NS


def model() -> ClockModel:
    return ClockModel(ModelConfig(max_clock_error_ppb=1000.0, max_bound_ns=10_000_000,
                                  holdover_after_ns=100 * NS))


def test_unsynchronised_until_the_first_update() -> None:
    m = model()
    assert m.state(5 * NS) == "unsynchronised"
    assert m.utc_ns(5 * NS) is None and m.error_bound_ns(5 * NS) is None
    assert m.leap() == 0


def test_utc_follows_offset_and_frequency() -> None:
    m = model()
    m.update(1_000 * NS, OFFSET, freq_ppb=-20_000.0, freq_se_ppb=10.0, bound_ns=5_000.0, leap=1)
    assert m.utc_ns(1_000 * NS) == 1_000 * NS + OFFSET
    # 10 s later, raw ran 20 ppm fast: UTC - raw fell by 200 us.
    assert m.utc_ns(1_010 * NS) == 1_010 * NS + OFFSET - 200_000
    assert m.leap() == 1
    assert m.freq_ppm == -20.0


def test_bound_grows_at_the_documented_rate_then_the_state_decays() -> None:
    m = model()
    m.update(1_000 * NS, OFFSET, freq_ppb=0.0, freq_se_ppb=100.0, bound_ns=5_000.0)
    rate_ppb = 3 * 100.0 + 1000.0
    assert m.growth_ppb == rate_ppb
    assert m.error_bound_ns(1_000 * NS) == 5_001
    assert m.error_bound_ns(1_050 * NS) == 5_001 + round(rate_ppb * 50)
    assert m.state(1_050 * NS) == "synchronised"
    assert m.state(1_101 * NS) == "holdover"
    assert m.utc_ns(1_101 * NS) is not None
    # 10 ms at 1.3 ppm: ~7690 s after the update, the model gives up.
    assert m.state(1_000 * NS + 7_600 * NS) == "holdover"
    assert m.state(1_000 * NS + 7_700 * NS) == "unsynchronised"
    assert m.utc_ns(1_000 * NS + 7_700 * NS) is None


def test_undecided_selection_means_holdover_and_success_restores() -> None:
    m = model()
    m.update(1_000 * NS, OFFSET, 0.0, 10.0, 5_000.0)
    m.mark_undecided(1_001 * NS, "cannot decide")
    assert m.state(1_002 * NS) == "holdover" and m.reason == "cannot decide"
    m.update(1_003 * NS, OFFSET, 0.0, 10.0, 5_000.0)
    assert m.state(1_003 * NS) == "synchronised"
