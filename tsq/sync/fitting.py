"""Regression helpers shared by the engine's clock filter and the bridge's line fit.

Both weight samples by their excess delay and size their window with a runs test, as chrony's
sourcestats does; the formulas live here once.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple, TypeVar

P = TypeVar("P")
F = TypeVar("F")


def delay_weights(delays_ns: Sequence[int], floor_ns: float) -> list[float]:
    """Weights `1 / (sigma0 + excess/2)^2`, excess = delay - the smallest delay.

    A sample that waited on one leg can be off by half its excess delay, so low-delay samples
    dominate; sigma0 = max(`floor_ns`, half the median excess) is the typical scatter, which keeps
    a single lucky sample from taking all the weight."""
    d_min = min(delays_ns)
    excess = sorted(d - d_min for d in delays_ns)
    sigma0 = max(floor_ns, excess[len(excess) // 2] / 2)
    return [1.0 / (sigma0 + (d - d_min) / 2) ** 2 for d in delays_ns]


def signs_look_random(positive: Sequence[bool], z: float = 2.33) -> bool:
    """Wald-Wolfowitz runs test on residual signs, oldest first.

    False when the signs come in fewer runs than random noise would give by more than `z` standard
    deviations (one-sided; 2.33 is 1 %): the residuals have a shape, so the line does not fit the
    whole window (wander, a frequency change) and the oldest points should go.
    """
    n1 = sum(positive)
    n = len(positive)
    n2 = n - n1
    if n1 == 0 or n2 == 0:
        return n < 3
    runs = 1 + sum(1 for a, b in zip(positive, positive[1:]) if a != b)
    mean = 1 + 2 * n1 * n2 / n
    var = 2 * n1 * n2 * (2 * n1 * n2 - n) / (n * n * (n - 1))
    return runs >= mean - z * math.sqrt(var)


def fit_linear_window(points: Sequence[P], fit: Callable[[Sequence[P]], F],
                      looks_linear: Callable[[Sequence[P], F], bool], min_window: int) -> Tuple[int, F]:
    """Fit `points` (oldest first); while `looks_linear` says the residuals have a shape, drop the
    oldest quarter and fit again, never below `min_window` points.

    Returns how many of the oldest points the last fit left out, and that fit."""
    start = 0
    while True:
        window = points[start:]
        result = fit(window)
        n = len(window)
        if n <= min_window or looks_linear(window, result):
            return start, result
        start += max(1, min(n // 4, n - min_window))
