"""The ledger's operations in SQL, shared by SQLite and PostgreSQL, and the pool of sessions.

Everything here blocks: `SqlLedger` calls it from worker threads (and, on SQLite, three writes
from the event loop's thread, on a store of their own). Each method runs in its own
transaction and returns after the commit. The SQL is written once, with ``?`` placeholders
and two tokens a `Dialect` fills in: ``{now}``, the ledger's clock (this host's for SQLite,
the database server's for PostgreSQL, so leases and deadlines are judged on one clock
whatever the skew between hosts), and ``{lock}`` (``FOR UPDATE OF i`` on PostgreSQL;
SQLite's ``BEGIN IMMEDIATE`` already locks the whole database).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Final, TypeVar

from .._models import TERMINAL_STATUSES
from ._base import InFlightError, Intent, LedgerError, Settlement
from ._liveness import Owner, judge_alive
from ._schema import LATEST_VERSION, MIGRATIONS, VERSION_TABLE
from ._session import Dialect, Session, intent_id_floor

T = TypeVar("T")

_ATTEMPTS: Final = 5  # transactions retried after a deadlock or serialization failure
_CHUNK: Final = 500  # ids per IN (...) list: well under SQLite's 32,766 variables

_COLUMNS: Final = (
    "i.intent_id, i.model, i.fingerprint, i.params, i.count, i.sent_at, i.sent_at_server,"
    " i.deadline, i.expires_at, i.state, i.how, i.client_id, COALESCE(c.host, ''),"
    " COALESCE(c.host_key, ''), COALESCE(c.pid, 0), COALESCE(c.start_token, ''), c.lease_until,"
    " COALESCE(c.closed, 1), {now}"  # an owner without a row was pruned long after it closed
    " FROM oxen_ledger_intents i"
    " LEFT JOIN oxen_ledger_clients c ON c.client_id = i.client_id"
)
_INSERT_ID: Final = (
    "INSERT INTO oxen_ledger_generations"
    " (generation_id, intent_id, position, recorded_at, updated_at)"
    " VALUES (?, ?, ?, {now}, {now}) ON CONFLICT (generation_id) DO NOTHING"
)
_IDS_OF: Final = (
    "SELECT intent_id, generation_id, finished FROM oxen_ledger_generations"
    " WHERE intent_id IN ({marks}) ORDER BY position, recorded_at"
)
_UNANSWERED: Final = "i.state IN ('in_flight', 'lost')"


class SqlStore:
    """The ledger's operations, on up to ``pool_size`` sessions (callers run no more
    operations at once), for ``owner``, who judges other owners' liveness."""

    def __init__(
        self, connect: Callable[[], Session], dialect: Dialect, *, owner: Owner, pool_size: int
    ) -> None:
        self.dialect = dialect
        self.owner = owner
        self._connect = connect
        self._idle: queue.LifoQueue[Session] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._all: list[Session] = []  # list.append and .remove need no lock of ours
        self._maintenance: Session | None = None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._slots:
            try:
                session = self._idle.get_nowait()
            except queue.Empty:
                session = self._connect()
                self._all.append(session)
            try:
                yield session
            finally:
                if session.broken:
                    self._all.remove(session)
                    session.close()
                else:
                    self._idle.put(session)

    def _auto(self, body: Callable[[Session], T]) -> T:
        """Run ``body`` on a session without a transaction: each statement commits alone."""
        with self._session() as session:
            return body(session)

    def _write(self, body: Callable[[Session], T]) -> T:
        """Run ``body`` in one write transaction, again after a deadlock or the like."""
        with self._session() as session:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    with session.transaction():
                        return body(session)
                except Exception as exc:
                    if attempt == _ATTEMPTS or not session.is_transient(exc):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _exec(self, sql: str, params: Sequence[Any]) -> int:
        return self._auto(lambda s: s.run(sql, params))

    def _select(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._auto(lambda s: s.rows(sql, params))

    def open_session(self) -> Session:
        """Open a session ahead of the first operation (opening may wait for a lock: call it
        from a thread that can wait); return it."""
        with self._session() as session:
            return session

    def close(self) -> None:
        """Close every session (after the last operation and the last checkpoint)."""
        sessions, self._all = self._all, []
        for session in sessions:
            session.close()

    def checkpoint(self) -> None:
        """Run the dialect's checkpoint, if any, on a session of its own: the enqueue path
        never waits for it (an automatic one made every thousandth enqueue sync the log)."""
        if self.dialect.checkpoint is None:
            return
        if self._maintenance is None:
            self._maintenance = self._connect()
            self._all.append(self._maintenance)
        self._maintenance.rows(self.dialect.checkpoint)

    def migrate(self) -> int:
        """Create or upgrade the schema; return the version found before."""
        d = self.dialect

        def body(s: Session) -> int:
            if d.schema_lock:
                s.rows(d.schema_lock)
            s.run(VERSION_TABLE.format(float=d.float_type))
            found = int(s.rows("SELECT max(version) FROM oxen_ledger_schema")[0][0] or 0)
            if found > LATEST_VERSION:
                raise LedgerError(
                    f"the ledger's schema is version {found}, newer than this oxen-queue "
                    f"knows ({LATEST_VERSION}); upgrade oxen-queue"
                )
            for index in range(found, LATEST_VERSION):
                script = MIGRATIONS[index].format(float=d.float_type, without_rowid=d.without_rowid)
                for statement in script.split(";"):
                    if statement.strip():
                        s.run(statement)
                s.run("INSERT INTO oxen_ledger_schema VALUES (?, {now})", (index + 1,))
            return found

        return self._write(body)

    def register(self, lease_ttl: float) -> None:
        """Record this owner, with a lease of ``lease_ttl`` seconds from now."""
        o = self.owner
        self._exec(
            "INSERT INTO oxen_ledger_clients (client_id, host, host_key, pid, start_token,"
            " opened_at, lease_until, closed) VALUES (?, ?, ?, ?, ?, {now}, {now} + ?, 0)"
            " ON CONFLICT (client_id) DO UPDATE"
            " SET lease_until = excluded.lease_until, closed = 0",
            (o.client_id, o.host, o.host_key, o.pid, o.start_token, lease_ttl),
        )

    def renew_lease(self, lease_ttl: float) -> None:
        self._exec(
            "UPDATE oxen_ledger_clients SET lease_until = {now} + ?"
            " WHERE client_id = ? AND closed = 0",
            (lease_ttl, self.owner.client_id),
        )

    def close_owner(self) -> None:
        """Mark this owner closed: gone at once for every judge."""
        self._exec(
            "UPDATE oxen_ledger_clients SET closed = 1, lease_until = {now} WHERE client_id = ?",
            (self.owner.client_id,),
        )

    def record_intent(
        self,
        intent_id: str,
        *,
        model: str,
        fingerprint: str,
        params_json: str,
        count: int,
        sent_at: float,
        sent_at_server: float | None,
        deadline: float,
    ) -> None:
        """Insert an intent, ``in_flight``, owned by this client."""
        # The deadline is on the sender's clock; its twin on the ledger's (expires_at) is what
        # staleness is judged by, so a judge on a host with another clock waits the full time.
        self._exec(
            "INSERT INTO oxen_ledger_intents (intent_id, model, fingerprint, params, count,"
            " sent_at, sent_at_server, deadline, client_id, expires_at, state, recorded_at,"
            " updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {now} + ?, 'in_flight', {now}, {now})",
            (intent_id, model, fingerprint, params_json, count, sent_at, sent_at_server, deadline,
             self.owner.client_id, deadline - time.time()),
        )  # fmt: skip

    def record_ids(self, intent_id: str, ids: Sequence[str]) -> list[str]:
        def body(s: Session) -> list[str]:
            if not s.run(
                "UPDATE oxen_ledger_intents SET state = 'answered', how = NULL,"
                " updated_at = {now} WHERE intent_id = ? AND state <> 'answered'",
                (intent_id,),
            ):
                self._state(s, intent_id)  # raises if unknown; answered again is harmless
            return self._insert_ids(s, intent_id, ids, start=0)

        return self._write(body)

    def _insert_ids(
        self, s: Session, intent_id: str, ids: Sequence[str], *, start: int
    ) -> list[str]:
        """Insert ids for an intent; return those another intent holds."""
        conflicts: list[str] = []
        for position, generation_id in enumerate(ids, start):
            if not s.run(_INSERT_ID, (generation_id, intent_id, position)):
                holder = s.rows(
                    "SELECT intent_id FROM oxen_ledger_generations WHERE generation_id = ?",
                    (generation_id,),
                )
                if holder and holder[0][0] != intent_id:
                    conflicts.append(generation_id)
        return conflicts

    def record_outcome(self, generation_id: str, status: str) -> bool:
        return bool(
            self._exec(
                "UPDATE oxen_ledger_generations SET status = ?, finished = ?,"
                " updated_at = {now} WHERE generation_id = ? AND finished = 0",
                (status, int(status in TERMINAL_STATUSES), generation_id),
            )
        )

    def _state(self, s: Session, intent_id: str, op: str = "", *allowed: str) -> tuple[str, int]:
        """``(fingerprint, count)`` of an intent, locked for the transaction.

        With ``allowed`` states, ``op`` refuses any other, and an intent another client owns:
        one that took it over judged this client gone (a lease that ran out on a cut-off
        host), and settles it.
        """
        rows = s.rows(
            "SELECT i.state, i.fingerprint, i.count, i.client_id"
            " FROM oxen_ledger_intents i WHERE i.intent_id = ?{lock}",
            (intent_id,),
        )
        if not rows:
            raise LedgerError(f"the ledger has no intent {intent_id!r}")
        state, fingerprint, count, client_id = rows[0]
        if allowed and client_id != self.owner.client_id:
            raise LedgerError(
                f"intent {intent_id!r} was taken over by client {client_id}, which settles it"
            )
        if allowed and state not in allowed:
            raise LedgerError(f"intent {intent_id!r} is {state}: {op} refused")
        return str(fingerprint), int(count)

    def _set(self, s: Session, intent_id: str, state: str, how: str | None = None) -> None:
        s.run(
            "UPDATE oxen_ledger_intents SET state = ?, how = ?, updated_at = {now}"
            " WHERE intent_id = ?",
            (state, how, intent_id),
        )

    def mark_lost(self, intent_id: str) -> None:
        def body(s: Session) -> None:
            self._state(s, intent_id, "mark_lost", "in_flight", "lost")
            self._set(s, intent_id, "lost")

        self._write(body)

    def mark_settled(self, intent_id: str, how: Settlement, ids: Sequence[str]) -> list[str]:
        def body(s: Session) -> list[str]:
            self._state(s, intent_id, "mark_settled", "in_flight", "lost", "settled")
            held = self._held(s, intent_id)
            fresh = [i for i in dict.fromkeys(ids) if i not in held]
            conflicts = self._insert_ids(s, intent_id, fresh, start=len(held))
            self._set(s, intent_id, "settled", how)
            return conflicts

        return self._write(body)

    def _held(self, s: Session, intent_id: str) -> list[str]:
        sql = "SELECT generation_id FROM oxen_ledger_generations WHERE intent_id = ?"
        rows = s.rows(sql + " ORDER BY position, recorded_at", (intent_id,))
        return [str(row[0]) for row in rows]

    def in_flight(self, fingerprint: str, exclude_intent: str | None) -> list[Intent]:
        return self._auto(lambda s: self._with(s, fingerprint, "in_flight", exclude_intent))

    def lost(self, fingerprint: str, exclude_intent: str | None) -> list[Intent]:
        return self._auto(lambda s: self._with(s, fingerprint, "lost", exclude_intent, ids=True))

    def _with(
        self, s: Session, fingerprint: str, state: str, exclude: str | None, *, ids: bool = False
    ) -> list[Intent]:
        # _UNANSWERED repeats the partial index's own condition: SQLite uses a partial index
        # only for a query that states it, and that index holds the open intents alone,
        # where the fingerprint's full index holds every request ever made with it.
        where = f"{_UNANSWERED} AND i.fingerprint = ? AND i.state = ? AND i.intent_id <> ?"
        return self._intents(s, where, (fingerprint, state, exclude or ""), ids=ids)

    def claimed_ids(self, fingerprint: str, since: float | None) -> set[str]:
        sql = (
            "SELECT g.generation_id FROM oxen_ledger_generations g"
            " JOIN oxen_ledger_intents i ON i.intent_id = g.intent_id WHERE i.fingerprint = ?"
        )
        if since is None:
            rows = self._select(sql, (fingerprint,))
        else:
            rows = self._select(sql + " AND i.sent_at >= ?", (fingerprint, since))
        return {str(row[0]) for row in rows}

    def claim(self, intent_id: str, candidate_ids: Sequence[str]) -> list[str]:
        def body(s: Session) -> list[str]:
            fingerprint, count = self._state(s, intent_id, "claim", "in_flight", "lost")
            # An intent in flight was recorded before its request left, so if its job is
            # among the candidates the intent is visible here; until its answer names the
            # job, nobody can tell which candidate is its.
            flying = self._with(s, fingerprint, "in_flight", intent_id)
            if busy := [i for i in flying if i.owner_alive]:
                raise InFlightError(busy)
            held = self._held(s, intent_id)
            for candidate in dict.fromkeys(candidate_ids):
                if len(held) >= count:
                    break
                if candidate not in held and s.run(_INSERT_ID, (candidate, intent_id, len(held))):
                    held.append(candidate)
            done = len(held) >= count
            self._set(s, intent_id, "settled" if done else "lost", "adopted" if done else None)
            return held

        return self._write(body)

    def stale_intents(self, now: float | None) -> list[Intent]:
        clock, params = ("{now}", ()) if now is None else ("?", (now,))
        where = f"{_UNANSWERED} AND i.expires_at <= {clock}"
        found = self._auto(lambda s: self._intents(s, where, params, ids=True))
        return [i for i in found if not i.owner_alive]

    def take_over(self, intent_id: str) -> Intent | None:
        def body(s: Session) -> Intent | None:
            try:
                self._state(s, intent_id)
            except LedgerError:
                return None
            # Read after the lock, in a statement of its own: on PostgreSQL, a locking read
            # that waited for a rival's take-over returns the new row joined to the owner row
            # its snapshot saw, the old owner's, which would judge the winner dead.
            [intent] = self._intents(s, "i.intent_id = ?", (intent_id,), ids=True)
            unanswered = intent.state in ("in_flight", "lost")
            if (
                intent.owner_alive
                # A settled request is taken over only for the jobs it holds that still run
                # (one adopted after a lost answer, say): it is not settled again.
                or (intent.state == "settled" and not intent.pending)
                or (unanswered and not intent.expired)
            ):
                return None
            state = "lost" if unanswered else intent.state
            changed = s.run(
                "UPDATE oxen_ledger_intents SET client_id = ?, state = ?,"
                " updated_at = {now} WHERE intent_id = ? AND client_id = ?",
                (self.owner.client_id, state, intent_id, intent.owner.client_id),
            )
            return self._read(s, intent_id) if changed == 1 else None

        return self._write(body)

    def unfinished(self, orphaned_only: bool) -> list[Intent]:
        def body(s: Session) -> list[Intent]:
            unanswered = self._intents(s, _UNANSWERED, ())
            where = (
                "i.intent_id IN (SELECT intent_id FROM oxen_ledger_generations WHERE finished = 0)"
            )
            merged = {i.intent_id: i for i in unanswered + self._intents(s, where, ())}
            chosen = [i for i in merged.values() if not (orphaned_only and i.owner_alive)]
            chosen.sort(key=lambda i: (i.sent_at, i.intent_id))
            return self._with_ids(s, chosen)

        return self._auto(body)

    def intent(self, intent_id: str) -> Intent | None:
        return self._auto(lambda s: self._read(s, intent_id))

    def prune(self, before: float) -> int:
        def body(s: Session) -> int:
            removed = s.run(
                "DELETE FROM oxen_ledger_intents WHERE intent_id < ?"
                " AND state IN ('answered', 'settled') AND NOT EXISTS ("
                " SELECT 1 FROM oxen_ledger_generations g"
                " WHERE g.intent_id = oxen_ledger_intents.intent_id AND g.finished = 0)",
                (intent_id_floor(before),),
            )
            s.run(
                "DELETE FROM oxen_ledger_clients WHERE client_id <> ?"
                " AND (closed = 1 OR lease_until < ?) AND opened_at < ? AND NOT EXISTS ("
                " SELECT 1 FROM oxen_ledger_intents i"
                " WHERE i.client_id = oxen_ledger_clients.client_id)",
                (self.owner.client_id, before, before),
            )
            return removed

        return self._write(body)

    def _read(self, s: Session, intent_id: str) -> Intent | None:
        found = self._intents(s, "i.intent_id = ?", (intent_id,), ids=True)
        return found[0] if found else None

    def _intents(
        self, s: Session, where: str, params: Sequence[Any], *, ids: bool = False
    ) -> list[Intent]:
        sql = f"SELECT {_COLUMNS} WHERE {where} ORDER BY i.sent_at, i.intent_id"
        found = [self._intent(row) for row in s.rows(sql, params)]
        return self._with_ids(s, found) if ids else found

    def _intent(self, row: tuple[Any, ...]) -> Intent:
        (intent_id, model, fingerprint, params, count, sent_at, sent_at_server, deadline,
         expires_at, state, how, client_id, host, host_key, pid, start_token, lease_until,
         closed, now) = row  # fmt: skip
        owner = Owner(
            client_id=client_id, host=host, host_key=host_key, pid=pid, start_token=start_token
        )
        alive = judge_alive(
            owner,
            me=self.owner,
            closed=bool(closed),
            lease_until=None if lease_until is None else float(lease_until),
            ledger_now=float(now),
        )
        return Intent(
            intent_id=intent_id,
            owner=owner,
            owner_alive=alive,
            model=model,
            fingerprint=fingerprint,
            params=json.loads(params),
            count=int(count),
            sent_at=float(sent_at),
            sent_at_server=None if sent_at_server is None else float(sent_at_server),
            deadline=float(deadline),
            expired=float(expires_at) <= float(now),
            state=state,
            how=how,
        )

    def _with_ids(self, s: Session, intents: list[Intent]) -> list[Intent]:
        """The intents with their ``ids`` and ``pending`` filled in."""
        ids: defaultdict[str, list[str]] = defaultdict(list)
        pending: defaultdict[str, list[str]] = defaultdict(list)
        keys = [i.intent_id for i in intents]
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            # Only markers are interpolated; the ids travel as parameters.
            sql = _IDS_OF.replace("{marks}", ", ".join("?" * len(chunk)))
            for intent_id, generation_id, finished in s.rows(sql, chunk):
                ids[intent_id].append(generation_id)
                if not finished:
                    pending[intent_id].append(generation_id)
        return [
            replace(i, ids=tuple(ids[i.intent_id]), pending=tuple(pending[i.intent_id]))
            for i in intents
        ]
