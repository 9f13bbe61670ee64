"""Suite-wide settings: hypothesis profiles sized for a loaded 2-core CI machine."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# ci: derandomized, so a CI run is reproducible and the coverage gate (tox.ini) sees the same
# examples every time; dev and thorough explore new examples on every run.
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
