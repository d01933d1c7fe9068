"""The enqueue ledger's protocol: what a lost enqueue answer is reconciled against.

The API has no idempotency key, so the job a lost ``POST /api/ai/queue`` answer created can only
be recognised by its model and parameters, which any client enqueueing the same ones could
claim. So every client that may enqueue with the same key shares a write-ahead ledger:

1. `Ledger.record_intent` before the request is sent, `Ledger.record_ids` when its answer
   arrives. When the answer is lost, `Ledger.mark_lost`, then `Ledger.wait_idle` for the
   other live intents with the fingerprint (their answers would claim the same rows), list
   the matching rows on the server less `Ledger.claimed_ids`, and `Ledger.claim` them
   (atomic, and a unique key on the generation id: two clients never hold one job), or
   `Ledger.mark_settled`.
2. `Ledger.record_outcome` as each generation ends; `Ledger.unfinished` for ``recover()``.
3. An intent past its deadline whose owner is gone (`_liveness`) is stale: any client may
   `Ledger.take_over` it and settle it.

```text
in_flight ──record_ids──▶ answered
    │  └──mark_settled──▶ settled (refused, never_created, ...)
    ├──mark_lost / take_over──▶ lost ──claim (complete)──▶ settled (adopted)
    │                             └──mark_settled──▶ settled (resent, ambiguous, ...)
    └ (any state but answered) ──record_ids──▶ answered   (an answer is the truth)
```
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .._exceptions import OxenError
from ._liveness import Owner

IntentState = Literal["in_flight", "answered", "lost", "settled"]

Settlement = Literal["adopted", "resent", "never_created", "ambiguous", "refused"]
"""How a request without an answer was settled. ``adopted``: its jobs were found and claimed.
``resent``: it created none, and its caller sent it again (a new intent). ``never_created``:
the same, with nobody left to resend it. ``ambiguous``: its jobs could be neither found nor
ruled out. ``refused``: the server certainly did not process it (429, 503, no connection)."""


class LedgerError(OxenError):
    """The ledger could not be opened, read or written, or was used out of order."""


class InFlightError(LedgerError):
    """A claim was refused: other live ``intents`` with the same fingerprint are in flight."""

    def __init__(self, intents: Sequence[Intent]) -> None:
        super().__init__(
            f"{len(intents)} other request(s) with the same model and parameters are in "
            "flight; wait for them, then look again"
        )
        self.intents = tuple(intents)


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """One enqueue request, as the ledger knows it. Times are seconds since the epoch."""

    intent_id: str
    owner: Owner  # the client answering for it: the one that sent it, or took it over
    owner_alive: bool  # whether the owner could still record an answer, judged when read
    model: str
    fingerprint: str
    params: Mapping[str, Any]  # the exact parameters sent, without model
    count: int  # the generations asked for
    sent_at: float  # on the sender's clock
    sent_at_server: float | None  # the same on the server's clock (an estimate), if known
    deadline: float  # when it can no longer be in flight (the sender's clock)
    expired: bool  # whether the deadline had passed when read, on the ledger's clock
    state: IntentState
    how: Settlement | None  # None unless settled
    ids: tuple[str, ...] = ()  # the generation ids it holds, in order (empty when not read)
    pending: tuple[str, ...] = ()  # those of ids with no terminal outcome recorded


def canonical_params(params: Mapping[str, Any]) -> str:
    """The parameters as canonical JSON: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def fingerprint(model: str, params: Mapping[str, Any]) -> str:
    """A hash (64 hex digits) equal for two requests when and only when the server cannot
    tell their rows apart: same model, same JSON parameters (``1`` and ``1.0`` differ)."""
    return fingerprint_of(model, canonical_params(params))


def fingerprint_of(model: str, params_json: str) -> str:
    """`fingerprint` from the parameters' `canonical_params` text."""
    # Both halves are JSON, which escapes every newline: the pair reads back one way only.
    return hashlib.sha256(f"{json.dumps(model)}\n{params_json}".encode()).hexdigest()


class Ledger(Protocol):
    """An open enqueue ledger, safe for concurrent tasks (see the module docstring).

    Blocking I/O runs in worker threads (asyncio and trio alike); a write is committed,
    visible to every process sharing the ledger, when its method returns. A method that
    changes an intent raises `LedgerError` for an unknown one, one in a state the diagram
    does not leave by that method, or one another client took over.
    """

    owner: Owner  # this client's identity in the ledger (its intents carry it)

    async def open(self) -> None:
        """Connect, create or migrate the schema, register this owner and start its lease."""

    async def aclose(self) -> None:
        """Mark this owner closed: its unanswered intents become settleable by others once
        past their deadline. Idempotent."""

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
        """Record a request about to be sent (``sent_at`` ``None``: now); return its id."""

    async def record_ids(self, intent_id: str, ids: Sequence[str]) -> list[str]:
        """Record the ids an answer named; return those another intent held (and keeps)."""

    async def record_outcome(self, generation_id: str, status: str) -> bool:
        """Record a generation's status: ``False`` for an unknown id or one already terminal
        (the first terminal status stays, and takes it off `unfinished`)."""

    async def mark_lost(self, intent_id: str) -> None:
        """The request's answer was lost: reconciliation starts."""

    async def mark_settled(
        self, intent_id: str, how: Settlement, ids: Sequence[str] = ()
    ) -> list[str]:
        """Settle a request without an answer, holding ``ids``; return those of ``ids``
        another intent held (not recorded)."""

    async def in_flight(
        self, fingerprint: str, *, exclude_intent: str | None = None
    ) -> list[Intent]:
        """The intents with this fingerprint in flight, live owners or not, oldest first."""

    async def lost(self, fingerprint: str, *, exclude_intent: str | None = None) -> list[Intent]:
        """The unsettled intents with this fingerprint whose answer was lost, with their ids
        (the rows they await are candidates of every one of them)."""

    async def wait_idle(
        self, fingerprint: str, *, exclude_intent: str | None = None, timeout: float | None
    ) -> list[Intent]:
        """Wait (``timeout`` seconds at most, or ``None``) until no other intent with this
        fingerprint is in flight with a live owner; return ``[]``, or those still in flight.
        Other processes are polled; this one's changes wake at once."""

    async def claimed_ids(self, fingerprint: str, *, since: float | None = None) -> set[str]:
        """Every id held by an intent with this fingerprint sent since ``since`` (the
        sender's clock; ``None``: all that the ledger retains)."""

    async def claim(self, intent_id: str, candidate_ids: Sequence[str]) -> list[str]:
        """Atomically take unheld candidates, in order, until the intent holds ``count``;
        return every id it holds. Completing the intent settles it (``adopted``).

        Raises:
            InFlightError: Another intent with this fingerprint is in flight with a live
                owner; nothing was taken.
        """

    async def stale_intents(self, *, now: float | None = None) -> list[Intent]:
        """Unanswered intents past their deadline at ``now`` (``None``: the ledger's clock)
        whose owner is gone."""

    async def take_over(self, intent_id: str) -> Intent | None:
        """Own an intent whose owner is gone, to settle it alone: one stale (it becomes
        ``lost``), or answered or settled with generations unfinished. ``None`` if it is not
        orphaned, or another client took it first."""

    async def unfinished(self, *, orphaned_only: bool = False) -> list[Intent]:
        """For ``recover()``: intents with ``pending`` generations, and unanswered ones (only
        those whose owner is gone with ``orphaned_only``)."""

    async def intent(self, intent_id: str) -> Intent | None:
        """One intent with its ids, or ``None`` if the ledger has no such intent."""

    async def prune(self, *, before: float) -> int:
        """Forget answered and settled intents recorded before ``before`` whose generations
        all finished, and closed owners left without intents; return how many intents."""
