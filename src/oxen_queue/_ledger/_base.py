"""The enqueue ledger's protocol: what a lost enqueue answer is reconciled against.

The API has no idempotency key, so the job a lost ``POST /api/ai/queue`` answer created can only
be recognised by its model and parameters, and any client enqueueing the same ones could
claim it. The ledger is written ahead, and shared by every client that may enqueue with the
same key (processes on one host through SQLite, several hosts through PostgreSQL):

1. Before the request is sent, `Ledger.record_intent` records an *intent* (state
   ``in_flight``). Its id is the request's, for the rest of its life.
2. When the answer arrives, `Ledger.record_ids` records the ids it created
   (``answered``). When it is lost, `Ledger.mark_lost` (``lost``) starts
   reconciliation:

   a. `Ledger.wait_idle` until no other live intent with the same fingerprint is in
      flight (its answer would claim the same rows);
   b. list the matching rows on the server, drop `Ledger.claimed_ids`;
   c. `Ledger.claim` what remains. The claim is atomic, refuses ids another intent
      holds (a unique key on the generation id), and refuses to run while another live intent
      with the fingerprint is in flight (`InFlightError`: back to a.). Two clients
      therefore never hold the same job.
   d. Or `Ledger.mark_settled`: ``resent`` (none was created, the caller sends
      again under a new intent), ``ambiguous`` (raised to the caller), ``refused``.

3. `Ledger.record_outcome` as each generation ends; `Ledger.unfinished` lists
   what is enqueued and not finished, and intents without an answer, for ``recover()``.
4. An intent past its deadline whose owner is gone (`_liveness`) is *stale*: any client
   may `Ledger.take_over` it and settle it against the server.

State machine of an intent:

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
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from .._exceptions import OxenError
from ._liveness import Owner

__all__ = [
    "InFlightError",
    "Intent",
    "IntentState",
    "Ledger",
    "LedgerError",
    "Settlement",
    "canonical_params",
    "fingerprint",
    "fingerprint_of",
]

IntentState = Literal["in_flight", "answered", "lost", "settled"]
"""``in_flight``: sent or about to be, no answer yet. ``answered``: the ids are recorded.
``lost``: the answer was lost; being reconciled. ``settled``: reconciled (see ``how``)."""

Settlement = Literal["adopted", "resent", "never_created", "ambiguous", "refused"]
"""How a request without an answer was settled. ``adopted``: its jobs were found and claimed.
``resent``: it was shown never to have created a job, and its caller sent it again (under a
new intent). ``never_created``: the same, with nobody left to resend it (a stale intent).
``ambiguous``: the jobs could be neither found nor ruled out. ``refused``: the server
certainly did not process it (429, 503, no connection)."""


class LedgerError(OxenError):
    """The ledger could not be opened, read or written, or was used out of order."""


class InFlightError(LedgerError):
    """A claim was refused: another live intent with the same fingerprint is in flight.

    Its answer may name rows that the claim would take, so the claimer waits
    (`Ledger.wait_idle`), looks at the server again and claims again.

    Attributes:
        intents: The intents in flight when the claim was refused.
    """

    def __init__(self, message: str, *, intents: Sequence[Intent]) -> None:
        super().__init__(message)
        self.intents = tuple(intents)


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """One enqueue request, as the ledger knows it.

    Attributes:
        intent_id: The ledger's id of the request.
        owner: The client answering for it (the one that sent it, or took it over).
        owner_alive: Whether the owner could still record an answer, judged when read.
        model: The model id.
        fingerprint: `fingerprint` of the model and parameters.
        params: The exact parameters sent (without ``model``).
        count: How many generations the request asked for.
        sent_at: When it was sent, in seconds since the epoch, on the sender's clock.
        sent_at_server: The same on the server's clock (an estimate), or ``None`` if unknown.
        deadline: After this time (seconds since the epoch, the sender's clock) the request
            can no longer be in flight, so its outcome can be judged from the server.
        expired: Whether the deadline had passed when read, judged on the ledger's clock
            (see `Ledger.stale_intents`).
        state: See `IntentState`.
        how: How it was settled, or ``None`` unless ``state`` is ``settled``.
        ids: The generation ids it holds, in the order recorded (empty when not read).
        pending: Those of ``ids`` with no terminal outcome recorded.
    """

    intent_id: str
    owner: Owner
    owner_alive: bool
    model: str
    fingerprint: str
    params: Mapping[str, Any]
    count: int
    sent_at: float
    sent_at_server: float | None
    deadline: float
    expired: bool
    state: IntentState
    how: Settlement | None
    ids: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()


def canonical_params(params: Mapping[str, Any]) -> str:
    """The parameters as canonical JSON: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def fingerprint(model: str, params: Mapping[str, Any]) -> str:
    """A stable hash of a model and its exact parameters (64 hex digits).

    Two requests have the same fingerprint when and only when the server cannot tell their
    rows apart: same model, same parameters with the same JSON values (``1`` and ``1.0``
    differ, as they do in the rows).
    """
    return fingerprint_of(model, canonical_params(params))


def fingerprint_of(model: str, params_json: str) -> str:
    """`fingerprint` from the parameters' `canonical_params` text."""
    # Both halves are JSON, which escapes every newline: the pair reads back one way only.
    return hashlib.sha256(f"{json.dumps(model)}\n{params_json}".encode()).hexdigest()


class Ledger(Protocol):
    """An open enqueue ledger. All methods are safe to call from concurrent tasks.

    Each implementation does its blocking I/O in worker threads, so it serves asyncio and
    trio alike. Every write is committed (visible to every process sharing the ledger) when
    its method returns. Times are float seconds since the epoch; durations float seconds.
    """

    @property
    def owner(self) -> Owner:
        """This client's identity in the ledger (its intents carry it)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def open(self) -> None:
        """Connect, create or migrate the schema, register this owner and start its lease."""
        ...

    async def aclose(self) -> None:
        """Stop the lease and mark this owner closed (its unanswered intents become
        settleable by others once past their deadline). Idempotent."""
        ...

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
        """Record a request about to be sent (``in_flight``); return its intent id.

        Args:
            model: The model id.
            params: The exact parameters to be sent (JSON values, without ``model``).
            count: How many generations it asks for (``num_generations``, at least 1).
            deadline: When the request can no longer be in flight (seconds since the epoch):
                its send time plus everything its attempt may take.
            sent_at: When it is sent; ``None`` for now.
            sent_at_server: The same on the server's clock, or ``None`` if unknown.
        """
        ...

    async def record_ids(self, intent_id: str, ids: Sequence[str]) -> list[str]:
        """Record the ids an answer named (``answered``), from any state but ``answered``.

        Returns:
            The ids another intent already held; they stay with it. Empty unless a client
            outside the protocol took them.
        """
        ...

    async def record_outcome(self, generation_id: str, status: str) -> bool:
        """Record a generation's status; a terminal one (``succeeded``, ``failed``,
        ``cancelled``) takes it off `unfinished`.

        Returns:
            Whether it was recorded: ``False`` when the id is not in the ledger or was
            already terminal (the first terminal status stays).
        """
        ...

    async def mark_lost(self, intent_id: str) -> None:
        """The request's answer was lost; reconciliation starts (``lost``).

        Raises:
            LedgerError: Unknown intent, already ``answered`` or ``settled``, or taken over
                by another client (see `take_over`).
        """
        ...

    async def mark_settled(
        self, intent_id: str, how: Settlement, ids: Sequence[str] = ()
    ) -> list[str]:
        """Settle a request without an answer (``settled``), recording ``ids`` as its own.

        Returns:
            Those of ``ids`` another intent already held (not recorded).

        Raises:
            LedgerError: Unknown intent, already ``answered``, or taken over by another
                client.
        """
        ...

    async def in_flight(
        self, fingerprint: str, *, exclude_intent: str | None = None
    ) -> list[Intent]:
        """The intents with this fingerprint in flight, live owners or not, oldest first."""
        ...

    async def lost(self, fingerprint: str, *, exclude_intent: str | None = None) -> list[Intent]:
        """The intents with this fingerprint whose answer was lost and which are not settled
        yet, with their ids: the rows they await are candidates of every one of them."""
        ...

    async def wait_idle(
        self, fingerprint: str, *, exclude_intent: str | None = None, timeout: float | None
    ) -> list[Intent]:
        """Wait until no other intent with this fingerprint is in flight with a live owner.

        Dead owners' intents are ignored: their answers can never be recorded. Other
        processes are polled (every ``poll_interval``); this process's own changes wake
        waiters at once.

        Args:
            fingerprint: The fingerprint to watch.
            exclude_intent: The caller's own intent.
            timeout: Seconds to wait at most; ``None`` for no limit.

        Returns:
            ``[]`` when idle; otherwise the intents still in flight when the time ran out.
        """
        ...

    async def claimed_ids(self, fingerprint: str, *, since: float | None = None) -> set[str]:
        """Every id held by any intent with this fingerprint.

        Args:
            fingerprint: The fingerprint.
            since: Only intents sent at or after this time (sender's clock); ``None`` for all
                that the ledger retains.
        """
        ...

    async def claim(self, intent_id: str, candidate_ids: Sequence[str]) -> list[str]:
        """Atomically take unheld candidates, in order, until the intent holds ``count``.

        Ids another intent holds are skipped: a unique key on the generation id makes every
        id held by one intent at most, across all clients. A claim that completes the intent
        settles it (``adopted``) in the same transaction; a partial one leaves it ``lost``.

        Returns:
            Every id the intent now holds, in the order taken.

        Raises:
            InFlightError: Another intent with this fingerprint is in flight with a live
                owner; nothing was taken.
            LedgerError: Unknown intent, already ``answered`` or ``settled``, or taken over
                by another client.
        """
        ...

    async def stale_intents(self, *, now: float | None = None) -> list[Intent]:
        """Intents without an answer (``in_flight`` or ``lost``), past their deadline, whose
        owner is gone.

        Args:
            now: The time to judge deadlines at, on the ledger's clock; ``None`` for the
                ledger's current time (the database server's, for PostgreSQL).
        """
        ...

    async def take_over(self, intent_id: str) -> Intent | None:
        """Make this client the owner of an orphaned intent, so that it alone settles it.

        Allowed when the owner is gone and the intent is ``answered`` or ``settled`` with
        generations still unfinished (to watch them), or past its deadline without an answer
        (it becomes ``lost``).

        Returns:
            The intent as taken over, or ``None`` if it is not orphaned (or another client
            took it first).
        """
        ...

    async def unfinished(self, *, orphaned_only: bool = False) -> list[Intent]:
        """What ``recover()`` picks up: intents with generations not known to be finished
        (``pending``), and intents without an answer (``in_flight`` or ``lost``).

        Args:
            orphaned_only: Only those whose owner is gone.
        """
        ...

    async def intent(self, intent_id: str) -> Intent | None:
        """One intent with its ids, or ``None`` if the ledger has no such intent."""
        ...

    async def prune(self, *, before: float) -> int:
        """Forget answered and settled intents recorded before ``before`` whose generations
        all finished, and the closed owners left without intents. Returns intents removed."""
        ...
