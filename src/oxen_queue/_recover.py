"""``recover()``: pick up the billed jobs of a client that is gone, from the enqueue ledger.

A process killed mid-batch leaves two kinds of work in the ledger: requests answered, whose
jobs run on without anyone watching them, and requests sent whose answer it never recorded.
The first are taken over at once. The second may still be in flight when the new process
starts, so they are settled against the server once their deadline has passed (the request
can no longer land): their jobs are found and claimed, or they are shown to have made none.
Taking over is atomic, so of several processes recovering at once each job goes to one.

An id the ledger holds that is not a plausible id (``_ids.plausible_id``: a malformed answer
named it) is a job that exists and cannot be watched: it is logged, never put into a URL.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ._clock import Span
from ._exceptions import AmbiguousEnqueueError, OxenError
from ._ids import plausible_id
from ._ledger import Intent, LedgerError, Settlement

if TYPE_CHECKING:
    from ._ledger import Ledger
    from ._reconcile import Reconciler

__all__ = ["Recovered", "recover_ids"]

logger = logging.getLogger("oxen_queue")


@dataclass(frozen=True, slots=True)
class Recovered:
    """A gone client's job, now this client's: its id and its request's model and params."""

    generation_id: str
    model: str
    params: Mapping[str, Any]


async def recover_ids(
    ledger: Ledger, reconciler: Reconciler, *, wait: float | None
) -> list[Recovered]:
    """The unfinished jobs of gone clients, now this client's.

    Args:
        ledger: The ledger.
        reconciler: Settles requests without an answer against the server.
        wait: Seconds to wait at most for gone clients' requests still within their
            deadline; ``None`` waits as long as it takes.
    """
    found: dict[str, Recovered] = {}

    def add(intent: Intent, ids: Iterable[str]) -> None:
        for generation_id in ids:
            if not plausible_id(generation_id):
                logger.warning(
                    "recover(): job %.80r of an enqueue of %s cannot be watched (not an id that "
                    "can be put in a URL); look for it in client.list_generations()",
                    generation_id,
                    intent.model,
                )
                continue
            found[generation_id] = Recovered(generation_id, intent.model, intent.params)

    give_up = anyio.current_time() + (math.inf if wait is None else wait)
    told = False
    while True:
        orphans = await ledger.unfinished(orphaned_only=True)
        stale = {intent.intent_id for intent in await ledger.stale_intents()}
        waiting: list[Intent] = []
        for intent in orphans:
            if intent.state in ("answered", "settled"):  # jobs known, still running
                taken = await ledger.take_over(intent.intent_id)
                if taken is not None:
                    add(taken, taken.pending)
            elif intent.intent_id in stale:
                taken = await ledger.take_over(intent.intent_id)
                if taken is not None:
                    add(taken, await _settle(ledger, reconciler, taken))
            else:
                waiting.append(intent)  # sent by a gone client, and possibly still landing
        # One reading of the clock per pass: the sleep below is then never negative (anyio
        # refuses one), however long saying the wait takes (a log handler may be slow).
        now = anyio.current_time()
        if not waiting or now >= give_up:
            if waiting:
                logger.warning(
                    "recover(): %d request(s) of gone clients are still within their deadline; "
                    "call recover() again later to settle them",
                    len(waiting),
                )
            return list(found.values())
        if not told:  # a wait of up to twice the request timeout deserves a word
            told = True
            # The deadlines are on their senders' clocks: on this host, most likely.
            last = max(intent.deadline for intent in waiting) - time.time()
            logger.warning(
                "recover(): %d request(s) a gone client sent may still reach the server; "
                "waiting up to %.0f s, until they cannot, to settle them",
                len(waiting),
                max(0.0, min(last, give_up - now)),
            )
        await anyio.sleep(min(1.0, give_up - now))


async def _settle(ledger: Ledger, reconciler: Reconciler, intent: Intent) -> list[str]:
    """Settle a gone client's request that never recorded its answer; the ids it made.

    Its window rests on its sender's estimate of the server's clock when it has one, else on
    ours (the same host's clock, most likely); neither is verified from here, so its reach
    is wide (see ``_clock``).
    """
    span = Span(intent.sent_at, intent.deadline, server_start=intent.sent_at_server)
    try:
        ids = await reconciler.settle(
            intent.intent_id,
            model=intent.model,
            params=intent.params,
            count=intent.count,
            span=span,
            created=False,
        )
    except AmbiguousEnqueueError as exc:
        logger.warning(
            "recover(): a gone client's enqueue of %s cannot be settled: %s (candidates: %s)",
            intent.model,
            exc,
            ", ".join(exc.candidate_ids) or "none",
        )
        await _mark(ledger, intent, "ambiguous")
        return []
    except OxenError as exc:
        logger.warning("recover(): could not look up a gone client's enqueue: %s", exc)
        return []
    if ids is None:
        await _mark(ledger, intent, "never_created")
        return []
    return ids


async def _mark(ledger: Ledger, intent: Intent, how: Settlement) -> None:
    try:
        await ledger.mark_settled(intent.intent_id, how)
    except LedgerError as exc:
        logger.warning("recover(): the ledger could not settle %s: %s", intent.intent_id, exc)
