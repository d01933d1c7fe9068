"""Connections to a ledger's database (`Session`), and what differs between two (`Dialect`)."""

from __future__ import annotations

import abc
import functools
import secrets
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar


def new_intent_id() -> str:
    """A unique intent id that sorts by creation time: hex microseconds, then 72 random bits."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def intent_id_floor(moment: float) -> str:
    """The smallest intent id made at ``moment`` (seconds since the epoch) or later."""
    return f"{max(0, int(moment * 1_000_000)):014x}"


class Session(abc.ABC):
    """One database connection in autocommit mode, used by one thread at a time, that takes
    SQL written with ``?``, ``{now}`` and ``{lock}`` (see `Dialect`)."""

    dialect: ClassVar[Dialect]
    _conn: Any  # a DB-API connection whose execute() returns its cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(_translate(self.dialect, sql), params).fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return how many rows it changed."""
        return int(self._conn.execute(_translate(self.dialect, sql), params).rowcount)

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction: committed on exit, rolled back on an exception."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a failed transaction may simply be run again (deadlock, serialization)."""
        return False

    def is_busy(self, exc: BaseException) -> bool:
        """Whether ``exc`` says another connection held a lock a statement needed, and the
        session would not wait for it (SQLite's ``database is locked``)."""
        return False

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (it is then closed, not reused)."""
        return False

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL of two databases."""

    float_type: str  # the column type of times
    now: str  # the ledger's clock, in seconds since the epoch
    lock: str  # appended to a SELECT of intents about to change
    placeholder: str  # the driver's parameter marker
    without_rowid: str = ""  # appended to CREATE TABLE of small rows
    schema_lock: str | None = None  # serialises migrations, unless the transaction does
    checkpoint: str | None = None  # moves the write-ahead log into the database


@functools.lru_cache(maxsize=256)
def _translate(dialect: Dialect, text: str) -> str:
    text = text.replace("{now}", dialect.now).replace("{lock}", dialect.lock)
    return text.replace("?", dialect.placeholder)
