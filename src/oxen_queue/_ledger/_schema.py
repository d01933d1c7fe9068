"""The ledger's tables: one migration per schema version, the same for both backends.

The ``oxen_ledger_`` prefix lets a ledger live in an application's own database. Times are
float seconds since the epoch (PostgreSQL's ``REAL`` would round them to minutes). Every index
costs a page written per commit on the enqueue path, so there are few; ``recover()`` scans for
unfinished generations rather than keep an index every outcome would rewrite. Intent ids start
with their time: new rows land on the B-tree's last page, and pruning goes by primary key.
The primary key on ``generation_id`` is the guarantee that no two intents hold the same job.
"""

from __future__ import annotations

from typing import Final

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

MIGRATIONS: Final = (_V1,)  # the i-th brings version i to i + 1: append, never edit

LATEST_VERSION: Final = len(MIGRATIONS)

VERSION_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS oxen_ledger_schema ("
    " version INTEGER PRIMARY KEY, applied_at {float} NOT NULL)"
)
