"""Every async test runs on asyncio and on trio; hypothesis runs the same examples everywhere;
what needs a process, a browser or a database is marked ``slow``, by itself.

The tiers: ``uv run pytest -m "not slow"`` is the inner loop (no subprocess, no Chromium, no
PostgreSQL); ``uv run pytest`` runs everything. A test is marked ``slow`` when it asks for a
fixture that brings one of those (:data:`SLOW_FIXTURES`, the ledger's PostgreSQL backend), or
by hand (``@pytest.mark.slow``) when it starts processes itself. No test can forget: one that
starts a process without the mark fails, saying so (:func:`_processes_only_in_slow_tests`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

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

# Fixtures that bring a process, a browser or a database: a test that asks for one (directly
# or through another fixture) is slow. The ledger's PostgreSQL backend is a marked parameter
# of its own (tests/ledger/conftest.py).
SLOW_FIXTURES = frozenset(
    {
        "postgres_cluster",  # initdb and pg_ctl: a PostgreSQL server (tests/ledger)
        "browser",  # chromedriver and headless Chromium (tests/test_page.py)
    }
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # The longest tests start first: pytest-xdist's worksteal hands each worker a contiguous
    # share of this order, so a test that runs for a minute overlaps the rest of the suite
    # instead of being its tail.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class _ProcessWatch:
    """Which processes a test not marked ``slow`` started, seen by an audit hook.

    Every way Python starts a program raises one of :data:`EVENTS` (``subprocess``, asyncio's
    and trio's process APIs and multiprocessing go through them). An audit hook cannot be
    removed, so it stays for the process and records only while a fast test runs.
    """

    EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork", "os.system"})

    def __init__(self) -> None:
        self.watching = False
        self.started: list[str] = []
        self._lock = threading.Lock()  # a test's threads may start processes too

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.watching and event in self.EVENTS:
            with self._lock:
                self.started.append(f"{event}{_describe(args)}")


def _describe(args: tuple[Any, ...]) -> str:
    text = repr(args[:2])
    return text if len(text) <= 200 else text[:200] + "...)"


_WATCH = _ProcessWatch()
sys.addaudithook(_WATCH.hook)


@pytest.fixture(autouse=True)
def _processes_only_in_slow_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that starts a process must be marked ``slow`` (so ``-m "not slow"`` stays quick
    and free of them): one that does without the mark fails, naming what it started."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    _WATCH.started.clear()
    _WATCH.watching = True
    try:
        yield
    finally:
        _WATCH.watching = False
    if _WATCH.started:
        pytest.fail(
            "this test starts a process but is not marked slow (@pytest.mark.slow, or ask for "
            f"a fixture in tests/conftest.py's SLOW_FIXTURES): {_WATCH.started[:3]}",
            pytrace=False,
        )
