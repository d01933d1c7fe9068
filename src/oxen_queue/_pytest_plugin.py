"""The pytest plugin of oxen-queue: an ``oxen_emulator`` fixture.

pytest loads this in every run where oxen-queue is installed, so it imports nothing heavy,
and nothing of the emulator: the emulator's modules load when a test first asks for the
fixture. It lives outside ``oxen_queue.testing`` so that pytest starts where the
``emulator`` extra is missing; a test that asks for the fixture there fails with the line to
install it.

```python
def test_my_code(oxen_emulator):  # sync or async (asyncio or trio)
    # OXEN_BASE_URL and OXEN_API_KEY point at the emulator for this test.
    ...
    assert oxen_emulator.stats()["jobs_created"] == 1


@pytest.mark.oxen_emulator(failure_rate=1.0)  # any EmulatorConfig field
def test_failures(oxen_emulator): ...
```

By default jobs run 100 times faster than in real time (``time_scale=0.01``: an image takes
25-70 ms). Override the ``oxen_emulator_config`` fixture to change the defaults of a module or
a whole suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import Emulator, EmulatorConfig


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``oxen_emulator`` marker."""
    config.addinivalue_line(
        "markers",
        "oxen_emulator(**fields): EmulatorConfig fields for the oxen_emulator fixture "
        "(e.g. time_scale=0.001, failure_rate=0.5)",
    )


@pytest.fixture
def oxen_emulator_config() -> EmulatorConfig:
    """The configuration ``oxen_emulator`` starts from (override to change the defaults)."""
    from .testing import TEST_TIME_SCALE, EmulatorConfig

    return EmulatorConfig(time_scale=TEST_TIME_SCALE)


@pytest.fixture
def oxen_emulator(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    oxen_emulator_config: EmulatorConfig,
) -> Iterator[Emulator]:
    """A running [`Emulator`][oxen_queue.testing.Emulator], with ``OXEN_BASE_URL`` and
    ``OXEN_API_KEY`` set to reach it, stopped after the test.

    A ``@pytest.mark.oxen_emulator(**fields)`` marker overrides fields of
    ``oxen_emulator_config``.
    """
    from .testing import DUMMY_API_KEY, Emulator

    config = oxen_emulator_config
    marker = request.node.get_closest_marker("oxen_emulator")
    if marker is not None:
        if marker.args:
            raise TypeError("@pytest.mark.oxen_emulator takes keyword arguments only")
        config = config.replace(**marker.kwargs)
    with Emulator(config=config) as emulator:
        monkeypatch.setenv("OXEN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OXEN_API_KEY", config.api_key or DUMMY_API_KEY)
        yield emulator
