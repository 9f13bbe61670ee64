"""The drift record (sans-IO): the raw clock's frequency, saved across restarts (chrony's driftfile).

    record = engine.export_drift(now_raw, realtime_ns)      # None until the model is synchronised
    text = record.to_json()                                 # the gateway writes it (atomically)
    record = DriftRecord.from_json(text)                    # DriftError on anything malformed
    verdict = engine.import_drift(record, now_raw, realtime_ns)   # at start, before the first sample

The frequency is the model's `d(UTC - raw)/d(raw)` with its standard error, stamped with the UTC
(realtime) and raw instants it was measured at. Only UTC carries over a reboot (CLOCK_MONOTONIC_RAW
restarts from zero), so a record's age is measured in UTC.

What is saved is a long-baseline frequency (`FrequencyTracker`): a line through the model's offset
sampled once a minute over up to two hours, far more precise than the regression window's (a few
minutes through a jittery path). Until that line has enough points, the model's own is saved.

Freshness: the crystal wanders while the gateway is off, so the uncertainty grows with age as a
random walk, `se(age) = sqrt(se_saved^2 + (wander x sqrt(age_s))^2)` with `wander` 1 ppb/sqrt(s)
(60 ppb after an hour, 0.3 ppm after a day). The record is trusted while that is still below the
model's own wander allowance (`max_clock_error_ppb`, 1 ppm: about 11 days at the default) and its
stamp is not in the future; otherwise it is ignored and the engine starts cold. A trusted record only
sets each source's frequency prior: the first samples still decide the offset, and a frequency that
is wrong shows up in the residuals and is outvoted by the data within minutes.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Optional, Tuple

NS_PER_S = 1_000_000_000
FORMAT = "tsq-drift-1"
FUTURE_SLACK_NS = 60 * NS_PER_S      # a record stamped this far ahead of the clock is refused


class DriftError(ValueError):
    """A drift record that cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True)
class DriftRecord:
    freq_ppb: float                   # d(UTC - raw)/d(raw), as the model's freq_ppb
    freq_se_ppb: float                # its standard error
    unix_ns: int                      # UTC (realtime) when it was measured
    raw_ns: int                       # CLOCK_MONOTONIC_RAW then (informative: it restarts at boot)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "freq_ppb": self.freq_ppb, "freq_se_ppb": self.freq_se_ppb,
                           "unix_ns": self.unix_ns, "raw_ns": self.raw_ns}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DriftRecord:
        try:
            obj = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise DriftError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DriftError(f"not a {FORMAT} record")
        freq, se = _number(obj, "freq_ppb"), _number(obj, "freq_se_ppb")
        unix_ns, raw_ns = _integer(obj, "unix_ns"), _integer(obj, "raw_ns")
        if se < 0:
            raise DriftError(f"negative freq_se_ppb {se}")
        return cls(freq, se, unix_ns, raw_ns)

    def age_ns(self, realtime_ns: int) -> int:
        return realtime_ns - self.unix_ns

    def se_at(self, realtime_ns: int, wander_ppb_per_rt_s: float) -> float:
        """The standard error after the crystal wandered for the record's age (a random walk)."""
        age_s = max(0, self.age_ns(realtime_ns)) / NS_PER_S
        return math.sqrt(self.freq_se_ppb ** 2 + wander_ppb_per_rt_s ** 2 * age_s)


def _number(obj: Any, key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DriftError(f"{key} is not a finite number: {value!r}")
    return float(value)


def _integer(obj: Any, key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DriftError(f"{key} is not an integer: {value!r}")
    return int(value)


def judge(record: DriftRecord, realtime_ns: int, wander_ppb_per_rt_s: float,
          max_se_ppb: float) -> tuple[Optional[float], str]:
    """(the standard error to use, None when the record is not to be trusted; the verdict in words)."""
    age_s = record.age_ns(realtime_ns) / NS_PER_S
    head = f"drift {record.freq_ppb / 1000.0:+.3f} ppm"
    if record.age_ns(realtime_ns) < -FUTURE_SLACK_NS:
        return None, f"{head} ignored: stamped {-age_s:.0f} s in the future"
    se = record.se_at(realtime_ns, wander_ppb_per_rt_s)
    if se > max_se_ppb:
        return None, (f"{head} ignored: {age_s / 3600:.1f} h old, uncertainty grown to "
                      f"{se / 1000.0:.3f} ppm > {max_se_ppb / 1000.0:.3f} ppm")
    return se, f"{head} ± {se / 1000.0:.3f} ppm used ({age_s:.0f} s old)"


class FrequencyTracker:
    """The raw clock's frequency over a long baseline: a least-squares line through the model's offset
    (UTC - raw) taken at most once per `every_s`, the last `points` of them.

    Neighbouring points come from overlapping regression windows, so their errors are correlated and
    the residual scatter understates them; the standard error is doubled for it. A model step larger
    than its bound starts the line again."""

    def __init__(self, every_s: float = 60.0, points: int = 120, min_points: int = 5) -> None:
        self.every_ns = int(every_s * NS_PER_S)
        self.min_points = min_points
        self.points: Deque[Tuple[int, int]] = deque(maxlen=points)

    def add(self, raw_ns: int, offset_ns: int, stepped: bool) -> None:
        if stepped:
            self.points.clear()
        if self.points and raw_ns - self.points[-1][0] < self.every_ns:
            return
        self.points.append((raw_ns, offset_ns))

    def estimate(self) -> Optional[Tuple[float, float]]:
        """(freq_ppb, se_ppb) of the line, None with fewer than `min_points` points."""
        n = len(self.points)
        if n < self.min_points:
            return None
        r0, o0 = self.points[0]
        xs = [(r - r0) / NS_PER_S for r, _ in self.points]
        ys = [float(o - o0) for _, o in self.points]
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        resid = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys))
        se = 2.0 * math.sqrt(resid / (n - 2) / sxx)
        return b, se
