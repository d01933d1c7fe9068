"""Every async test runs on asyncio and on trio; hypothesis runs the same examples everywhere."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Property-based tests are verdicts, not searches: the same examples on every machine (a
# failure seen once is seen again), no deadline (a busy machine is no bug), and no database
# left in the checkout. HYPOTHESIS_PROFILE=search explores anew, with more examples.
settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "search",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
