"""Shared test configuration: hypothesis profiles and the loopback image server.

``fast`` keeps local runs quick (random, with the example database);
``ci`` builds on Hypothesis' built-in ci profile (derandomized, no database,
no deadline) with more examples; ``ci-random`` is ``ci`` with a fresh random
seed, so CI also explores examples the derandomized run never reaches — run
it with ``--hypothesis-seed=N`` and the seed is printed in the header, so a
failure can be replayed with the same seed.
``srv`` is a fresh loopback image server for any test that asks for one;
helpers that belong to one area live in ``tests/support/``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.server import ImageServer

settings.register_profile(
    "fast", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci-random", parent=settings.get_profile("ci"), derandomize=False)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "fast")
)


def pytest_report_header(config: pytest.Config) -> str:
    """Name the profile and seed, so any property failure can be replayed."""
    seed = config.getoption("--hypothesis-seed", default=None)
    return (
        f"hypothesis: profile {settings.get_current_profile_name()!r}, "
        f"seed {seed if seed is not None else 'random (pass --hypothesis-seed to fix it)'}"
    )


@pytest.fixture
async def srv() -> AsyncIterator[ImageServer]:
    """A fresh loopback image server on 127.0.0.1 (every unknown ``.jpg`` is generated)."""
    async with ImageServer() as server:
        yield server
