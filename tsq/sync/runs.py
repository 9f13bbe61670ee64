"""The runs test that sizes regression windows (chrony's sourcestats uses the same idea)."""

from __future__ import annotations

import math
from typing import Sequence


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
