"""The enqueue ledger: what makes a lost enqueue answer reconcilable across processes.

One protocol (`Ledger`, in ``_base``), two backends on the same SQL (``_store``): SQLite for
the processes of one host, PostgreSQL for several hosts. `open_ledger` makes one from a URL.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._base import InFlightError as InFlightError
from ._base import Intent as Intent
from ._base import Ledger as Ledger
from ._base import LedgerError as LedgerError
from ._base import Settlement as Settlement
from ._base import fingerprint as fingerprint
from ._liveness import DEFAULT_LEASE_TTL, DEFAULT_POLL_INTERVAL, DEFAULT_RETENTION
from ._liveness import Owner as Owner

if TYPE_CHECKING:  # the SQL machinery is imported only when a ledger URL is opened
    from ._session import Session
    from ._sqlledger import SqlLedger


def open_ledger(
    url: str | None,
    *,
    client_id: str | None = None,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    retention: float | None = DEFAULT_RETENTION,
    pool_size: int | None = None,
    owner: Owner | None = None,
) -> SqlLedger | None:
    """A ledger for a URL, not yet open (``async with ledger:`` opens and closes it), or
    ``None`` for no URL.

    Args:
        url: ``sqlite:///absolute/path/ledger.db``, ``sqlite:relative/ledger.db`` or
            ``postgresql://user:password@host/db``; ``None`` or empty for no ledger.
        client_id: This client instance's id, which others judge liveness by; ``None``: random.
        lease_ttl: Seconds a crashed client on another host still counts as alive.
        poll_interval: Seconds between looks at the ledger while waiting on other processes.
        retention: Seconds to keep finished intents (pruned at open); ``None`` for ever.
        pool_size: Connections, i.e. operations at once; ``None``: 1 for SQLite (writers
            are serialised anyway), 4 for PostgreSQL.
        owner: This client's whole identity, ``client_id`` included; ``None`` for this
            process's. Tests use it to stand in for other hosts or dead processes.

    Raises:
        ValueError: The URL is not one of the accepted forms (the message names them and
            never the password).
        LedgerError: A PostgreSQL URL without the ``postgres`` extra installed.
    """
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # an unparsable host part, say
        scheme = ""
    from ._sqlledger import SqlLedger
    from ._store import SqlStore

    connect: Callable[[], Session]
    errors: tuple[type[BaseException], ...]
    scrub: Callable[[str], str] = str  # the identity: a SQLite URL holds no secret
    loop_connect: Callable[[], Session] | None = None  # the event loop's own (see SqlLedger)
    if scheme == "sqlite":
        import sqlite3

        from . import _sqlite

        path, synchronous, busy_timeout = _sqlite.parse_sqlite_url(url)
        connect = partial(
            _sqlite.SQLiteSession, path, synchronous=synchronous, busy_timeout=busy_timeout
        )
        if synchronous != "full":  # a commit then syncs nothing (but see _sqlite)
            loop_connect = partial(connect, waits=False)
        store, dialect, size = SqlStore, _sqlite.DIALECT, pool_size or 1
        display, errors = f"sqlite:{path}", (sqlite3.Error, OSError)  # OSError: no directory
    elif scheme in ("postgresql", "postgres"):
        from . import _postgres

        try:
            scrub = redact = _postgres.Redactor(url)
        except ValueError:
            raise ValueError(
                f"unparsable postgresql ledger URL {redact_url(url)!r}: use "
                "postgresql://user:password@host:port/dbname"
            ) from None
        display, errors = redact.display, _postgres.driver_errors()
        connect = partial(_postgres.PostgresSession, url, redact)
        store, dialect, size = _postgres.PostgresStore, _postgres.DIALECT, pool_size or 4
    else:
        raise ValueError(
            f"unsupported ledger URL {redact_url(url)!r}: use sqlite:///absolute/path/ledger.db, "
            "sqlite:relative/path.db or postgresql://user:password@host:port/dbname "
            "(postgres:// too)"
        )
    owner = owner or Owner.current(client_id)
    return SqlLedger(
        store(connect, dialect, owner=owner, pool_size=size),
        loop_store=None
        if loop_connect is None
        else SqlStore(loop_connect, dialect, owner=owner, pool_size=1),
        display=display,
        errors=errors,
        scrub=scrub,
        pool_size=size,
        lease_ttl=lease_ttl,
        poll_interval=poll_interval,
        retention=retention,
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    from ._postgres import Redactor

    try:
        return Redactor(url).display
    except ValueError:  # not even a URL (a bad host part, say): show its scheme alone
        return f"{url.partition(':')[0][:20]}:..."
