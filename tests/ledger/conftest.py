"""Every ledger test runs on both backends: a SQLite file and a throwaway PostgreSQL.

The PostgreSQL cluster starts once per session, and only when a PostgreSQL test runs (about
half a second); each test gets a fresh schema in it, as each SQLite test gets a fresh file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from oxen_queue._ledger import open_ledger
from oxen_queue._ledger._sqlledger import SqlLedger

from .pgcluster import PostgresCluster, find_pg_bin, start_cluster

# PostgreSQL is slow by the suite's rule (a database server): `-m "not slow"` keeps SQLite.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL for the whole session (skipped only when not installed)."""
    if find_pg_bin() is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb on PATH nor under "
            "/usr/lib/postgresql/*/bin): apt-get install postgresql (.ci/run does)"
        )
    cluster = start_cluster()
    assert cluster is not None
    try:
        yield cluster
    finally:
        cluster.stop()


def backend_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to a fresh, empty ledger on ``backend``."""
    if backend == "sqlite":
        return f"sqlite://{tmp_path}/ledger.db"
    if request.node.get_closest_marker("slow") is None:
        # A test that builds its own parameters must mark PostgreSQL's as BACKENDS does.
        pytest.fail("a test on PostgreSQL must be marked slow (see BACKENDS)", pytrace=False)
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.url(schema=cluster.new_schema())


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger's URL, on each backend."""
    return backend_url(str(request.param), request, tmp_path)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[SqlLedger]:
    """An open ledger on a fresh database (polling every 10 ms: the tests wait on it)."""
    opened = open_ledger(ledger_url, poll_interval=0.01)
    assert opened is not None
    async with opened:
        yield opened
