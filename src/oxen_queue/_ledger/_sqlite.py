"""The SQLite backend: one file, shared by every process on one host.

``sqlite:///abs/path/ledger.db`` (absolute, as in ``file://`` URLs) or
``sqlite:relative/ledger.db``. Settings, and why:

* WAL journal: readers never block the writer nor each other. ``synchronous=NORMAL`` (the
  default): a commit survives the death of the process at once, a power failure only once the
  log is synced at a checkpoint; ``full`` syncs every commit (a disk flush per enqueue). A
  killed process is the case the ledger exists for; a machine losing power also loses the
  event loop that would have reconciled.
* ``wal_autocheckpoint=0``: no commit moves the log into the database (and syncs it);
  `SqlLedger`'s lease thread does, every second, on a connection of its own, ``PASSIVE``: it
  waits for nobody and nobody waits for it.
* ``busy_timeout`` (default 10 s): a process waits for another's write lock, not fails.
* ``BEGIN IMMEDIATE`` for every read-modify-write: the write lock is taken first, so two
  processes never both read and then conflict on commit (which SQLite fails, not waits for).
* One connection per ledger by default for the worker threads: SQLite serialises writers
  anyway, and one connection keeps its statement cache hot.
* One more for the event loop's thread (``waits=False``), whose busy timeout is 0: the three
  writes of the enqueue path run on it, without a thread hop (see `SqlLedger`). It holds the
  loop for a fraction of a millisecond as a rule (SQLite's own brief retries of a read lock
  aside). It never waits for a lock: held by another connection, it answers
  ``database is locked`` at once, and the write goes to a worker thread. A commit appends a
  few pages to the log and, under ``NORMAL``, syncs nothing, with one exception: the first
  commit after a checkpoint emptied the log starts it over and syncs its new header (SQLite
  does so under ``NORMAL`` too), so at most one sync per checkpoint, a second apart in each
  process. With ``full`` every commit syncs: no such connection, everything runs in threads.
* The ledger's clock is this host's ``time.time()``, as an SQL function.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from .._durations import seconds
from ._session import Dialect, Session

DIALECT: Final = Dialect(
    float_type="REAL",
    now="oxen_ledger_now()",
    lock="",
    placeholder="?",
    without_rowid=" WITHOUT ROWID",
    # PASSIVE: never waits for (nor blocks) the writers and readers of other processes.
    checkpoint="PRAGMA wal_checkpoint(PASSIVE)",
)

_WAL_LIMIT: Final = 64 * 1024 * 1024  # bytes of write-ahead log kept after a checkpoint


def parse_sqlite_url(url: str) -> tuple[Path, str, float]:
    """``(path, synchronous, busy_timeout)`` of a ``sqlite:`` URL (the path percent-decoded).

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
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "synchronous" and value.lower() in ("normal", "full"):
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
    dialect = DIALECT

    def __init__(
        self, path: Path, *, synchronous: str, busy_timeout: float, waits: bool = True
    ) -> None:
        """A connection; with ``waits=False``, one that never waits for a lock once open
        (the event loop's: see above)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions (see transaction). Threads take
        # turns with the connection, one at a time (the store's pool sees to it).
        self._conn = sqlite3.connect(
            path, busy_timeout, isolation_level=None, check_same_thread=False, cached_statements=128
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._enable_wal(busy_timeout)
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            # Checkpoints run on a connection of their own, off the enqueue path (SqlLedger).
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            self._conn.create_function("oxen_ledger_now", 0, time.time)
            if not waits:  # opened (and WAL checked) with the URL's wait, as the others
                self._conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            self._conn.close()
            raise

    def _enable_wal(self, busy_timeout: float) -> None:
        # WAL is a property of the file, set by whichever process gets there first. Switching
        # takes an exclusive lock for which SQLite calls no busy handler: processes opening a
        # new ledger together see "database is locked" at once. So look, and retry.
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

    def is_busy(self, exc: BaseException) -> bool:
        # SQLITE_BUSY and its extended codes (BUSY_SNAPSHOT, BUSY_RECOVERY), whose message
        # is "database is locked" alike.
        return (
            isinstance(exc, sqlite3.OperationalError)
            and getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
        )
