"""Shared test configuration: hypothesis profiles.

``fast`` keeps local runs quick; ``ci`` builds on Hypothesis' built-in ci
profile (derandomized, no database, no deadline) with more examples.
Fixtures that belong to one area live in ``tests/support/``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "fast")
)
