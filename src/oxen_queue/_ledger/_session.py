"""Connections to a ledger's database: sessions, the pool that lends them, SQL dialects.

A `Session` is one connection in autocommit mode, used by one thread at a time; the
`SessionPool` lends them to the worker threads of `SqlLedger` and
runs read-modify-write bodies in transactions (again after a deadlock). A `Dialect`
says how the shared SQL of `_store` reads in one database.
"""

from __future__ import annotations

import abc
import functools
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

__all__ = ["Dialect", "Session", "SessionPool", "intent_id_floor", "new_intent_id"]

T = TypeVar("T")

_ATTEMPTS: Final = 5  # transactions retried after a deadlock or serialization failure


def new_intent_id() -> str:
    """A unique intent id that sorts by creation time: hex microseconds, then 72 random bits."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def intent_id_floor(moment: float) -> str:
    """The smallest intent id made at ``moment`` (seconds since the epoch) or later."""
    return f"{max(0, int(moment * 1_000_000)):014x}"


class Session(abc.ABC):
    """One database connection, used by one thread at a time, in autocommit mode."""

    @abc.abstractmethod
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query; return its rows."""

    @abc.abstractmethod
    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return how many rows it changed."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction: committed on exit, rolled back on an exception."""

    @abc.abstractmethod
    def is_transient(self, exc: BaseException) -> bool:
        """Whether a failed transaction may simply be run again (deadlock, serialization)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (it is then closed, not reused)."""
        return False


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL of two databases.

    Attributes:
        name: For messages.
        float_type: The column type of times.
        now: An SQL expression for the ledger's clock, in seconds since the epoch.
        lock: Appended to a ``SELECT`` of intents that is about to change them.
        placeholder: The driver's parameter marker.
        without_rowid: Appended to ``CREATE TABLE`` of small rows (SQLite's WITHOUT ROWID).
        schema_lock: A statement that serialises migrations, or ``None`` if the write
            transaction already does.
        checkpoint: A statement that moves the write-ahead log into the database, run off
            the enqueue path on a connection of its own (SQLite), or ``None``.
    """

    name: str
    float_type: str
    now: str
    lock: str
    placeholder: str
    without_rowid: str = ""
    schema_lock: str | None = None
    checkpoint: str | None = None

    def sql(self, text: str) -> str:
        """``text`` in this dialect (cached: statements are few and reused)."""
        return _translate(self, text)


@functools.lru_cache(maxsize=256)
def _translate(dialect: Dialect, text: str) -> str:
    text = text.replace("{now}", dialect.now).replace("{lock}", dialect.lock)
    return text.replace("?", dialect.placeholder) if dialect.placeholder != "?" else text


class SessionPool:
    """Up to ``pool_size`` sessions, each used by one thread at a time.

    Args:
        connect: Opens a new session.
        dialect: The database's dialect.
        pool_size: Sessions kept at most; a thread beyond it waits for one to be free.
    """

    def __init__(
        self,
        connect: Callable[[], Session],
        dialect: Dialect,
        *,
        pool_size: int,
    ) -> None:
        self.dialect = dialect
        self._connect = connect
        self._idle: queue.LifoQueue[Session] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._all: list[Session] = []
        self._lock = threading.Lock()
        self._maintenance: Session | None = None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._slots:
            try:
                session = self._idle.get_nowait()
            except queue.Empty:
                session = self._connect()
                with self._lock:
                    self._all.append(session)
            try:
                yield session
            finally:
                if session.broken:
                    with self._lock:
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
            for attempt in range(_ATTEMPTS):
                try:
                    with session.transaction():
                        return body(session)
                except Exception as exc:
                    if attempt + 1 < _ATTEMPTS and session.is_transient(exc):
                        continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every session (after the last operation and the last checkpoint)."""
        with self._lock:
            sessions, self._all = self._all, []
            if self._maintenance is not None:
                sessions.append(self._maintenance)
                self._maintenance = None
        for session in sessions:
            session.close()

    def checkpoint(self) -> None:
        """Run the dialect's checkpoint, if any, on a session of its own.

        Its own, so that the enqueue path never waits for it: with SQLite's automatic
        checkpoints, every thousandth page written made one enqueue pay for syncing the log
        and the database (milliseconds on a virtual disk).
        """
        if self.dialect.checkpoint is None:
            return
        if self._maintenance is None:
            self._maintenance = self._connect()
        self._maintenance.rows(self.dialect.checkpoint)

    def _q(self, sql: str) -> str:
        return self.dialect.sql(sql)
