"""The SQLite backend: one file, shared by every process on one host.

``sqlite:///abs/path/ledger.db`` (as with ``file://`` URLs, the path after ``//`` is absolute)
or ``sqlite:relative/ledger.db``. Query options: ``synchronous=normal`` (default) or ``full``,
``busy_timeout`` in seconds (default 10).

Settings, and why:

* WAL journal: readers never block the writer nor each other, and a commit appends to one
  file. ``synchronous=NORMAL``: a commit survives the death of the process at once (the
  write-ahead log is in the operating system's cache), and a power failure or kernel crash
  only once the log is synced at a checkpoint; ``full`` syncs every commit (about a disk
  flush per enqueue). A process killed mid-enqueue is the case the ledger exists for; a
  machine losing power also loses the event loop that would have reconciled.
* ``busy_timeout``: a process waits for another's write lock rather than failing.
* ``BEGIN IMMEDIATE`` for every read-modify-write: the write lock is taken first, so two
  processes never both read and then conflict on commit (which SQLite would fail outright
  rather than wait for).
* One connection per ledger (the pool holds one by default): SQLite serialises writers
  anyway, and a single connection keeps its statement cache hot.
* The ledger's clock is this host's ``time.time()``, as an SQL function.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from .._durations import seconds
from ._session import Dialect, Session

__all__ = ["DIALECT", "SQLiteSession", "parse_sqlite_url"]

DIALECT: Final = Dialect(
    name="sqlite",
    float_type="REAL",
    now="oxen_ledger_now()",
    lock="",
    placeholder="?",
    without_rowid=" WITHOUT ROWID",
    # PASSIVE: never waits for (nor blocks) the writers and readers of other processes.
    checkpoint="PRAGMA wal_checkpoint(PASSIVE)",
)

_SYNCHRONOUS: Final = ("normal", "full")
_WAL_LIMIT: Final = 64 * 1024 * 1024  # bytes of write-ahead log kept after a checkpoint


def parse_sqlite_url(url: str) -> tuple[Path, str, float]:
    """``(path, synchronous, busy_timeout)`` of a ``sqlite:`` URL.

    The path names a file (percent-decoded; no NUL, which no file system takes); the options
    are ``synchronous=normal|full`` and ``busy_timeout=SECONDS`` (a finite number, zero or
    more).

    Raises:
        ValueError: Not a usable SQLite ledger URL.
    """
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"a sqlite ledger URL names a file, not a host: sqlite:///absolute/path.db or "
            f"sqlite:relative/path.db, not {url!r}"
        )
    path = unquote(parts.path)
    if not path or path == ":memory:" or path.endswith("/"):
        raise ValueError("a sqlite ledger URL must name a file, as in sqlite:///path/ledger.db")
    if "\x00" in path:
        raise ValueError("a sqlite ledger URL's path cannot hold a NUL character (%00)")
    synchronous, busy_timeout = "normal", 10.0
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key == "synchronous" and value.lower() in _SYNCHRONOUS:
            synchronous = value.lower()
        elif key == "busy_timeout":
            try:
                busy_timeout = seconds(float(value), field="busy_timeout", zero=True)
            except ValueError:  # InvalidParamsError is one
                raise ValueError(
                    f"busy_timeout must be seconds (a finite number, zero or more), "
                    f"not {value!r:.40}"
                ) from None
        else:
            raise ValueError(
                f"unknown sqlite ledger option {key}={value!r}; known: "
                "synchronous=normal|full, busy_timeout=SECONDS"
            )
    return Path(path), synchronous, busy_timeout


class SQLiteSession(Session):
    """One connection to the ledger's file (see the module docstring)."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE), never
        # implicitly by the sqlite3 module. check_same_thread=False: worker threads take
        # turns with the connection, one at a time (the store's pool sees to it).
        self._conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=128,
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._enable_wal(busy_timeout)
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            # Checkpoints run on the lease thread's own connection, every second (see
            # SqlStore.checkpoint), never in the middle of an enqueue.
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            self._conn.create_function("oxen_ledger_now", 0, time.time)
        except BaseException:
            self._conn.close()
            raise

    def _enable_wal(self, busy_timeout: float) -> None:
        # WAL is a property of the file, set once by whichever process gets there first.
        # Switching to it takes an exclusive lock for which SQLite does not call its busy
        # handler: several processes opening a new ledger together see "database is locked"
        # at once. So look first, and retry the switch until the busy timeout.
        give_up = time.monotonic() + busy_timeout
        while True:
            try:
                (mode,) = self._conn.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() == "wal":
                    return
                self._conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > give_up:
                    raise
                time.sleep(0.01 + random.random() * 0.02)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # also when COMMIT itself failed
                self._conn.execute("ROLLBACK")
            raise

    def is_transient(self, exc: BaseException) -> bool:
        return False  # BEGIN IMMEDIATE waits out other writers; nothing is worth a retry

    def close(self) -> None:
        self._conn.close()
