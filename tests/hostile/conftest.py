"""One hostile server for the whole package, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oxen_queue.testing import EmulatorConfig

from .server import HostileServer

FAST = EmulatorConfig(time_scale=0.01, seed=9, unrelated_event_rate=0.0)


@pytest.fixture(scope="package")
def hostile_server() -> Iterator[HostileServer]:
    with HostileServer(FAST) as server:
        yield server


@pytest.fixture
def server(hostile_server: HostileServer) -> Iterator[HostileServer]:
    """The package's server: no rules, an empty log, no jobs, the fast clock."""
    hostile_server.reset()
    yield hostile_server
    hostile_server.reset()  # end whatever this test left held open
