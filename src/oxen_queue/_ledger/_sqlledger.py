"""The `Ledger` protocol on a SQL database (SQLite or PostgreSQL).

The blocking store (`_store`) runs in anyio worker threads, ``pool_size`` operations at once,
with one exception. On SQLite, the three writes of every enqueue (`record_intent` before the
request, `record_ids` after its answer, `record_outcome` when its job ends) run on the event
loop's thread, on a store of their own whose one session never waits for a lock (`_sqlite`):
a thread hop costs more CPU than such a write (GIL hand-offs, their futex calls). Such a
write holds the loop for as long as SQLite takes to append a few pages to the log: it waits
for no lock and syncs nothing (bar one sync of the log's header after a checkpoint emptied
it, at most one per checkpoint: see `_sqlite`). When another connection holds the write lock,
the write runs again in a worker thread, which waits for the lock. PostgreSQL's writes are
network round trips, and SQLite's sync under ``synchronous=full``: both stay in threads.

A worker thread is never abandoned on cancellation: a write that started commits or fails
before its caller sees the cancellation, so the ledger never disagrees with what the caller
believes it wrote. A write on the loop's thread has no await: it cannot be cut in half, and
the caller can be cancelled only before it, as before a thread's. The owner's lease is
renewed by a daemon thread, not a task: it needs no task group from the caller, and keeps a
live process alive while its event loop is busy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn, Self, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._base import Intent, LedgerError, Settlement, canonical_params, fingerprint_of
from ._session import Session, new_intent_id
from ._store import SqlStore

logger = logging.getLogger("oxen_queue")

T = TypeVar("T")

_CHECKPOINT_EVERY: Final = 1.0  # seconds; bounds the write-ahead log to a second of writes


class SqlLedger:
    """An enqueue ledger in SQLite or PostgreSQL, made by `open_ledger` (see its arguments):
    ``loop_store`` is the event loop's (SQLite's three writes of an enqueue: see above),
    ``display`` its URL without credentials, ``errors`` the driver's exception types (raised
    as `LedgerError`), ``scrub`` removes credentials from their messages."""

    def __init__(
        self,
        store: SqlStore,
        *,
        loop_store: SqlStore | None = None,
        display: str,
        errors: tuple[type[BaseException], ...],
        scrub: Callable[[str], str],
        pool_size: int,
        lease_ttl: float,
        poll_interval: float,
        retention: float | None,
    ) -> None:
        self._store = store
        self._loop_store = loop_store
        self._loop: tuple[SqlStore, Session] | None = None  # with its session, once open
        self.owner = store.owner
        self._display = display
        self._errors = errors
        self._scrub = scrub
        self._limiter = anyio.CapacityLimiter(pool_size)
        self._lease_ttl = lease_ttl
        self._poll_interval = poll_interval
        self._retention = retention
        self._state = "new"
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        # Fingerprints of the intents this client owns and that may still be in flight, so
        # that its own changes wake its own waiters at once (others are polled).
        self._fingerprints: dict[str, tuple[str, int]] = {}
        self._changed: dict[str, anyio.Event] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._display} {self._state}>"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._state != "new":
            raise LedgerError(f"{self!r} cannot be opened twice")
        self._state = "opening"
        try:
            before = await self._call(self._store.migrate)
            await self._call(self._store.register, self._lease_ttl)
            if self._retention is not None:
                await self._call(self._store.prune, time.time() - self._retention)
            if (loop := self._loop_store) is not None:  # opened here: it may wait for a lock
                self._loop = (loop, await self._call(loop.open_session))
        except BaseException:
            self._state = "closed"
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)
            raise
        self._state = "open"
        self._heartbeat = threading.Thread(
            target=self._renew, name="oxen-queue ledger lease", daemon=True
        )
        self._heartbeat.start()
        logger.debug(
            "ledger %s open (schema v%d), client %s", self._display, before, self.owner.client_id
        )

    async def aclose(self) -> None:
        state, self._state = self._state, "closed"
        if state in ("new", "closed"):
            return
        # Shielded: an owner left unclosed would look alive to judges on other hosts for a
        # whole lease, and its connections would leak.
        with anyio.CancelScope(shield=True):
            self._stop.set()
            if self._heartbeat is not None:
                await anyio.to_thread.run_sync(self._heartbeat.join)
            try:
                await self._run(self._store.close_owner)
                await self._run(self._store.checkpoint)
            finally:
                await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        self._store.close()
        if self._loop_store is not None:
            self._loop_store.close()

    def _renew(self) -> None:
        """The lease thread: renew every third of the lease; checkpoint every second."""
        renew_every = self._lease_ttl / 3
        tick = (
            min(renew_every, _CHECKPOINT_EVERY) if self._store.dialect.checkpoint else renew_every
        )
        renewed = time.monotonic()
        while not self._stop.wait(tick):
            try:
                if time.monotonic() - renewed >= renew_every - tick / 2:
                    self._store.renew_lease(self._lease_ttl)
                    renewed = time.monotonic()
                self._store.checkpoint()
            except self._errors as exc:
                logger.warning("ledger upkeep failed: %s", self._scrub(str(exc)))

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        if self._state not in ("open", "opening"):
            raise LedgerError(f"{self!r} is not open (use `async with`)")
        return await self._run(func, *args)

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
        except self._errors as exc:
            self._fail(exc)

    async def _write_now(self, op: Callable[[SqlStore], T]) -> T:
        """``op``, one write of an enqueue, on the loop's thread when it need not wait, else
        in a worker thread (see above)."""
        await anyio.lowlevel.checkpoint()  # where a thread's caller could be cancelled
        if self._loop is not None and self._state == "open":
            store, session = self._loop
            try:
                return op(store)
            except self._errors as exc:
                if not session.is_busy(exc):
                    self._fail(exc)
                # Another connection holds the lock. The attempt changed nothing, so it may
                # run again: record_intent and record_outcome are one statement each, in
                # autocommit, and record_ids one transaction (SqlStore._write), rolled back
                # on any error. In a thread, which waits for the lock (the URL's busy_timeout).
        return await self._call(op, self._store)

    def _fail(self, exc: BaseException) -> NoReturn:
        """Raise a driver's error as a `LedgerError`, without credentials."""
        message = self._scrub(str(exc))
        error = LedgerError(f"ledger {self._display}: {message}")
        if message != str(exc):
            raise error from None  # the driver's own message names a credential
        raise error from exc

    def _touch(self, intent_id: str, *, done: bool) -> None:
        """Wake this client's waiters on the intent's fingerprint."""
        table = self._fingerprints
        known = table.pop(intent_id, None) if done else table.get(intent_id)
        if known is not None and (event := self._changed.pop(known[0], None)) is not None:
            event.set()

    async def record_intent(
        self,
        *,
        model: str,
        params: Mapping[str, Any],
        count: int,
        deadline: float,
        sent_at: float | None = None,
        sent_at_server: float | None = None,
    ) -> str:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        params_json = canonical_params(params)
        fp = fingerprint_of(model, params_json)
        intent_id = new_intent_id()
        sent = time.time() if sent_at is None else sent_at
        await self._write_now(
            lambda store: store.record_intent(
                intent_id,
                model=model,
                fingerprint=fp,
                params_json=params_json,
                count=count,
                sent_at=sent,
                sent_at_server=sent_at_server,
                deadline=deadline,
            )
        )
        self._fingerprints[intent_id] = (fp, count)
        return intent_id

    async def record_ids(self, intent_id: str, ids: Sequence[str]) -> list[str]:
        named = list(ids)
        conflicts = await self._write_now(lambda store: store.record_ids(intent_id, named))
        self._touch(intent_id, done=True)
        if conflicts:
            logger.warning(
                "ledger: intent %s answered with ids held by another: %s", intent_id, conflicts
            )
        return conflicts

    async def record_outcome(self, generation_id: str, status: str) -> bool:
        return await self._write_now(lambda store: store.record_outcome(generation_id, status))

    async def mark_lost(self, intent_id: str) -> None:
        await self._call(self._store.mark_lost, intent_id)
        self._touch(intent_id, done=False)

    async def mark_settled(
        self, intent_id: str, how: Settlement, ids: Sequence[str] = ()
    ) -> list[str]:
        conflicts = await self._call(self._store.mark_settled, intent_id, how, list(ids))
        self._touch(intent_id, done=True)
        return conflicts

    async def in_flight(
        self, fingerprint: str, *, exclude_intent: str | None = None
    ) -> list[Intent]:
        return await self._call(self._store.in_flight, fingerprint, exclude_intent)

    async def lost(self, fingerprint: str, *, exclude_intent: str | None = None) -> list[Intent]:
        return await self._call(self._store.lost, fingerprint, exclude_intent)

    async def wait_idle(
        self, fingerprint: str, *, exclude_intent: str | None = None, timeout: float | None
    ) -> list[Intent]:
        busy: list[Intent] = []
        changed: anyio.Event | None = None
        try:
            with anyio.move_on_after(timeout):
                while True:
                    # The event exists before the look, so a change after it is never missed.
                    changed = self._changed.setdefault(fingerprint, anyio.Event())
                    found = await self.in_flight(fingerprint, exclude_intent=exclude_intent)
                    busy = [i for i in found if i.owner_alive]
                    if not busy:
                        return []
                    with anyio.move_on_after(self._poll_interval):
                        await changed.wait()
            return busy
        finally:
            if (
                changed is not None
                and self._changed.get(fingerprint) is changed
                and not changed.statistics().tasks_waiting
            ):
                del self._changed[fingerprint]

    async def claimed_ids(self, fingerprint: str, *, since: float | None = None) -> set[str]:
        return await self._call(self._store.claimed_ids, fingerprint, since)

    async def claim(self, intent_id: str, candidate_ids: Sequence[str]) -> list[str]:
        held = await self._call(self._store.claim, intent_id, list(candidate_ids))
        known = self._fingerprints.get(intent_id)
        self._touch(intent_id, done=known is not None and len(held) >= known[1])
        return held

    async def stale_intents(self, *, now: float | None = None) -> list[Intent]:
        return await self._call(self._store.stale_intents, now)

    async def take_over(self, intent_id: str) -> Intent | None:
        intent = await self._call(self._store.take_over, intent_id)
        if intent is not None and intent.state == "lost":
            self._fingerprints[intent_id] = (intent.fingerprint, intent.count)
        return intent

    async def unfinished(self, *, orphaned_only: bool = False) -> list[Intent]:
        return await self._call(self._store.unfinished, orphaned_only)

    async def intent(self, intent_id: str) -> Intent | None:
        return await self._call(self._store.intent, intent_id)

    async def prune(self, *, before: float) -> int:
        return await self._call(self._store.prune, before)
