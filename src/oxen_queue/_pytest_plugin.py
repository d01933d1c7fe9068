"""The pytest plugin of oxen-queue: the ``oxen_emulator`` fixture. pytest loads it wherever
oxen-queue is installed, so it imports the emulator (the ``emulator`` extra) only when a test
asks for the fixture."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import Emulator, EmulatorConfig


def pytest_configure(config: pytest.Config) -> None:
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
    """A running [`Emulator`][oxen_queue.testing.Emulator], reached through ``OXEN_BASE_URL``
    and ``OXEN_API_KEY``, stopped after the test; ``@pytest.mark.oxen_emulator(**fields)``
    overrides fields of ``oxen_emulator_config``."""
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
