"""The PostgreSQL backend: one database shared by clients on several hosts.

``postgresql://user:password@host:5432/dbname?sslmode=require`` (or ``postgres://``): any
libpq URI; the tables go to the connection's ``search_path``. Needs the ``postgres`` extra
(psycopg 3, its blocking API in worker threads). Settings, and why:

* Autocommit, with transactions for read-modify-write only: one round trip per write on the
  enqueue path.
* ``SELECT ... FOR UPDATE OF i`` locks the intent being claimed or taken over; the primary
  key on the generation id arbitrates between two claims of one job (run again if they
  deadlock).
* Migrations run under an advisory lock: clients starting together on an empty database do
  not race to create the tables.
* The ledger's clock is the server's ``clock_timestamp()``, one clock for every host.
* The URL's password never appears in ``repr``, logs or errors: it shows as ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit, urlunsplit

from ._base import LedgerError
from ._session import Dialect, Session
from ._store import SqlStore

if TYPE_CHECKING:
    import psycopg

DIALECT: Final = Dialect(
    float_type="DOUBLE PRECISION",
    now="extract(epoch from clock_timestamp())::float8",
    lock=" FOR UPDATE OF i",
    placeholder="%s",
    # Any constant shared by every oxen-queue: 'oxen' 'ldgr' in ASCII.
    schema_lock="SELECT pg_advisory_xact_lock(7957494638691444338)",
)

_CONNECT_TIMEOUT: Final = 10  # seconds, unless the URL says otherwise

# The answer of an enqueue in one statement, so one round trip (the shared version takes
# four: BEGIN, UPDATE, INSERT, COMMIT), which counts between hosts. The foreign key is
# checked at the end of the statement, after the UPDATE found the intent.
_RECORD_IDS: Final = (
    "WITH answered AS ("
    " UPDATE oxen_ledger_intents SET state = 'answered', how = NULL, updated_at = {now}"
    " WHERE intent_id = %s RETURNING intent_id"
    "), inserted AS ("
    " INSERT INTO oxen_ledger_generations"
    " (generation_id, intent_id, position, recorded_at, updated_at)"
    " SELECT t.id, answered.intent_id, t.n - 1, {now}, {now}"
    " FROM answered, unnest(%s::text[]) WITH ORDINALITY AS t(id, n)"
    " ON CONFLICT (generation_id) DO NOTHING RETURNING generation_id"
    ") SELECT (SELECT count(*) FROM answered), ARRAY(SELECT generation_id FROM inserted)"
)


class Redactor:
    """Hides the credentials of a PostgreSQL URL in text shown to people."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        secrets: set[str] = set()
        netloc = parts.netloc
        if parts.password:
            secrets |= {parts.password, unquote(parts.password)}
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostinfo}"
        # The password as written, and as each reader may decode it (libpq quotes back what
        # it could not decode, raw: ``100%+sure``), is hidden in any form.
        for raw in re.split(r"[&;]", parts.query):
            key, _, value = raw.partition("=")
            if unquote_plus(key) == "password" and value:
                secrets |= {value, unquote(value), unquote_plus(value)}
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "password" and value:
                secrets |= {value, quote(value, safe="")}
                value = "***"
            query.append(f"{key}={value}" if key == "password" else f"{key}={quote(value)}")
        self.display = urlunsplit((parts.scheme, netloc, parts.path, "&".join(query), ""))
        # Longest first, so a secret containing another is hidden whole.
        self._pattern = (
            re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))
            if secrets
            else None
        )

    def __call__(self, text: str) -> str:
        """``text`` with every credential replaced by ``***``."""
        return self._pattern.sub("***", text) if self._pattern else text


def driver_errors() -> tuple[type[BaseException], ...]:
    """psycopg's exceptions (imported here: it is an optional extra, missing says so)."""
    try:
        import psycopg
    except ImportError as exc:
        raise LedgerError(
            "a postgresql:// ledger needs psycopg: pip install 'oxen-queue[postgres]'"
        ) from exc
    return (psycopg.Error,)


class PostgresStore(SqlStore):
    """The shared operations, with the answer of an enqueue recorded in one round trip."""

    def record_ids(self, intent_id: str, ids: Sequence[str]) -> list[str]:
        [(found, inserted)] = self._select(_RECORD_IDS, (intent_id, list(ids)))
        if not found:
            raise LedgerError(f"the ledger has no intent {intent_id!r}")
        inserted = set(inserted)
        missing = [i for i in dict.fromkeys(ids) if i not in inserted]
        if not missing:
            return []
        # Not inserted: held already, by this intent (answered twice) or by another.
        sql = "SELECT generation_id FROM oxen_ledger_generations WHERE generation_id = ANY(?)"
        others = {row[0] for row in self._select(sql + " AND intent_id <> ?", (missing, intent_id))}
        return [i for i in missing if i in others]


class PostgresSession(Session):
    dialect = DIALECT

    def __init__(self, url: str, redact: Redactor) -> None:
        import psycopg

        self._psycopg = psycopg
        given = any(key == "connect_timeout" for key, _ in parse_qsl(urlsplit(url).query))
        try:  # a None argument is dropped, leaving the URL's own
            self._conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                url, autocommit=True, connect_timeout=None if given else _CONNECT_TIMEOUT
            )
        except psycopg.Error as exc:
            # libpq may quote the connection string in its message: never chain the
            # original, whose text could carry the password.
            raise LedgerError(
                f"cannot connect to the ledger {redact.display}: {redact(str(exc))}"
            ) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def is_transient(self, exc: BaseException) -> bool:
        errors = self._psycopg.errors
        return isinstance(exc, errors.DeadlockDetected | errors.SerializationFailure)

    @property
    def broken(self) -> bool:
        return self._conn.broken or self._conn.closed
