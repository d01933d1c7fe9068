"""The ledger's tables, one migration per schema version, the same for both backends.

Table names carry an ``oxen_ledger_`` prefix so a ledger can live in an application's own
PostgreSQL database. Times are float seconds since the epoch (``DOUBLE PRECISION`` on
PostgreSQL: its ``REAL`` would round them to minutes). Flags are integers 0/1 on both.

Every index costs a page written per commit on the enqueue path, so there are few:
``intents(fingerprint)`` for `claimed_ids`; a partial index of the open intents (in
flight or lost, a handful at any time) for waiting, claiming and finding stale ones; and
``generations(intent_id)``. Intent ids start with their time (hex microseconds), so the
primary key also orders them for pruning and new rows land on the B-tree's last page.
Generation rows are small: on SQLite they live in their primary key (``WITHOUT ROWID``).
Finding unfinished generations (``recover()``, at start-up) scans that table rather than
keep an index that every outcome would rewrite.

``oxen_ledger_schema``
    One row per applied migration (``version``, ``applied_at``).
``oxen_ledger_clients``
    One row per open ledger (a client instance): who it is (see ``_liveness.Owner``), its
    lease on the ledger's clock, and whether it closed.
``oxen_ledger_intents``
    One row per enqueue request: model, fingerprint, exact parameters, count, when it was
    sent (sender's and server's clocks), its deadline on the sender's clock and, as
    ``expires_at``, on the ledger's, its state and how it was settled. ``client_id`` is the
    current owner (it changes on a take-over).
``oxen_ledger_generations``
    One row per generation id an intent holds (``position``: its place among the intent's
    ids), with the last status recorded and whether it is terminal (``finished``). The
    primary key on ``generation_id`` is the guarantee that no two intents hold the same job.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LATEST_VERSION", "MIGRATIONS", "VERSION_TABLE", "migration"]

_V1: Final = """
CREATE TABLE oxen_ledger_clients (
    client_id    TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    host_key     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    start_token  TEXT NOT NULL,
    opened_at    {float} NOT NULL,
    lease_until  {float} NOT NULL,
    closed       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE oxen_ledger_intents (
    intent_id       TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL,
    model           TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    params          TEXT NOT NULL,
    count           INTEGER NOT NULL CHECK (count >= 1),
    sent_at         {float} NOT NULL,
    sent_at_server  {float},
    deadline        {float} NOT NULL,
    expires_at      {float} NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('in_flight', 'answered', 'lost', 'settled')),
    how             TEXT,
    recorded_at     {float} NOT NULL,
    updated_at      {float} NOT NULL
);
CREATE INDEX oxen_ledger_intents_fingerprint ON oxen_ledger_intents (fingerprint);
CREATE INDEX oxen_ledger_intents_open ON oxen_ledger_intents (fingerprint)
    WHERE state IN ('in_flight', 'lost');
CREATE TABLE oxen_ledger_generations (
    generation_id  TEXT PRIMARY KEY,
    intent_id      TEXT NOT NULL
                   REFERENCES oxen_ledger_intents (intent_id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    status         TEXT,
    finished       INTEGER NOT NULL DEFAULT 0,
    recorded_at    {float} NOT NULL,
    updated_at     {float} NOT NULL
){without_rowid};
CREATE INDEX oxen_ledger_generations_intent ON oxen_ledger_generations (intent_id);
"""

MIGRATIONS: Final[tuple[str, ...]] = (_V1,)
"""Migration ``i`` brings the schema from version ``i`` to ``i + 1``; append, never edit."""

LATEST_VERSION: Final = len(MIGRATIONS)

VERSION_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS oxen_ledger_schema ("
    " version INTEGER PRIMARY KEY, applied_at {float} NOT NULL)"
)


def migration(index: int, *, float_type: str, without_rowid: str) -> list[str]:
    """The statements of migration ``index`` in a dialect, one per item."""
    script = MIGRATIONS[index].format(float=float_type, without_rowid=without_rowid)
    return [statement.strip() for statement in script.split(";") if statement.strip()]
