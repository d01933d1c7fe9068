"""Where the enqueue path's three writes run: on SQLite, on the event loop's thread while the
lock is free, in a worker thread when another connection holds it; elsewhere in threads."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from oxen_queue._ledger import LedgerError
from oxen_queue._ledger._sqlledger import SqlLedger

from .support import ledger_for, new_intent

pytestmark = pytest.mark.anyio

Write = Callable[[SqlLedger, str], Awaitable[Any]]


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """The functions run in worker threads from now on (``anyio.to_thread.run_sync``)."""
    hops: list[Callable[..., Any]] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


async def _three_writes(ledger: SqlLedger) -> str:
    intent_id = await new_intent(ledger, count=2)
    assert await ledger.record_ids(intent_id, ["g1", "g2"]) == []
    assert await ledger.record_outcome("g1", "succeeded")
    return intent_id


async def _written(ledger: SqlLedger, intent_id: str) -> None:
    intent = await ledger.intent(intent_id)
    assert intent is not None
    assert (intent.state, intent.ids, intent.pending) == ("answered", ("g1", "g2"), ("g2",))


async def test_on_sqlite_the_three_writes_stay_on_the_loops_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lease of an hour: no renewal (a write on the lease thread) can take the lock meanwhile.
    async with ledger_for(f"sqlite://{tmp_path}/ledger.db", lease_ttl=3600) as ledger:
        # Each statement on the ledger's tables of requests, on any of its connections (not
        # the lease thread's upkeep), with the connection and the thread that ran it.
        ran: list[tuple[str, int]] = []

        def trace(name: str) -> Callable[[str], None]:
            def traced(sql: str) -> None:
                if "oxen_ledger_intents" in sql or "oxen_ledger_generations" in sql:
                    ran.append((name, threading.get_ident()))

            return traced

        assert ledger._loop is not None
        ledger._loop[1]._conn.set_trace_callback(trace("loop"))
        for session in ledger._store._all:
            session._conn.set_trace_callback(trace("pool"))
        hops = count_hops(monkeypatch)
        intent_id = await _three_writes(ledger)
        written = list(ran)
        assert hops == []
        assert len(written) >= 3  # the trace saw them
        assert set(written) == {("loop", threading.get_ident())}
        await _written(ledger, intent_id)  # a read: in a thread, as before


async def _record_intent(ledger: SqlLedger, ready: str) -> Any:
    return await new_intent(ledger)


async def _record_ids(ledger: SqlLedger, ready: str) -> Any:
    return await ledger.record_ids(ready, ["g1", "g2"])


async def _record_outcome(ledger: SqlLedger, ready: str) -> Any:
    return await ledger.record_outcome("g1", "succeeded")


@pytest.mark.parametrize("write", [_record_intent, _record_ids, _record_outcome])
async def test_a_write_another_connection_locks_out_waits_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Write
) -> None:
    """Another process's write in progress (the lock held by a second connection): the write
    neither fails nor holds up the loop; it runs in a worker thread, which waits for the
    lock, and writes its rows once."""
    path = tmp_path / "ledger.db"
    # A lock the loop's session waited for would hold the loop 60 s, past the 20 s guards.
    async with ledger_for(f"sqlite://{path}?busy_timeout=60") as ledger:
        ready = await new_intent(ledger, count=2)  # for the writes that need one before
        if write is _record_outcome:
            await ledger.record_ids(ready, ["g1", "g2"])
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        go = threading.Event()

        def release() -> None:
            # At go, or after 30 s whatever happens (a failing test must not hang), and a
            # little later, so that the thread is waiting for the lock by then.
            go.wait(30)
            time.sleep(0.05)
            other.execute("COMMIT")

        releaser = threading.Thread(target=release, name="test lock holder")
        releaser.start()
        hops = count_hops(monkeypatch)
        results: list[Any] = []

        async def run() -> None:
            results.append(await write(ledger, ready))

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(20):
                    while not hops:  # this loop turns while the write waits
                        await anyio.sleep(0.01)
                assert not results  # the lock is still held: it waits, in its thread
                go.set()
            assert len(hops) == 1  # once: the thread waited, and wrote
        finally:
            go.set()
            await anyio.to_thread.run_sync(releaser.join)
            other.close()

        def count(sql: str, *params: Any) -> int:
            reader = sqlite3.connect(path)
            try:
                return int(reader.execute(sql, params).fetchone()[0])
            finally:
                reader.close()

        if write is _record_intent:
            [intent_id] = results
            where = "SELECT count(*) FROM oxen_ledger_intents WHERE intent_id = ?"
            assert count(where, intent_id) == 1
        elif write is _record_ids:
            assert results == [[]]
            assert count("SELECT count(*) FROM oxen_ledger_generations") == 2
        else:
            assert results == [True]
            assert count("SELECT count(*) FROM oxen_ledger_generations WHERE finished = 1") == 1
        assert count("SELECT count(*) FROM oxen_ledger_intents") == 1 + (write is _record_intent)


async def test_any_other_error_on_the_loops_session_is_raised_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is not a held lock is the caller's, as a LedgerError: not run again."""
    path = tmp_path / "ledger.db"
    async with ledger_for(f"sqlite://{path}") as ledger:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON oxen_ledger_intents"
            " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
        other.close()
        hops = count_hops(monkeypatch)
        with pytest.raises(LedgerError, match="refused by a trigger") as caught:
            await new_intent(ledger)
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
        assert hops == []


async def test_postgresql_and_synchronous_full_write_in_threads(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their writes may wait (a round trip to the server; a sync per commit): each of the three
    takes a worker thread, as every call does."""
    url = f"{ledger_url}?synchronous=full" if ledger_url.startswith("sqlite:") else ledger_url
    async with ledger_for(url) as ledger:
        assert ledger._loop is None
        hops = count_hops(monkeypatch)
        intent_id = await _three_writes(ledger)
        assert len(hops) == 3
        await _written(ledger, intent_id)
