"""``recover()``: take over the billed jobs of gone clients from the enqueue ledger (atomically:
of several processes recovering at once, each job goes to one)."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import anyio

from ._clock import Span
from ._exceptions import AmbiguousEnqueueError, OxenError
from ._ids import plausible_id
from ._ledger import Intent, LedgerError, Settlement

if TYPE_CHECKING:
    from ._ledger import Ledger
    from ._reconcile import Reconciler

logger = logging.getLogger("oxen_queue")


async def recover_ids(
    ledger: Ledger, reconciler: Reconciler, *, wait: float | None
) -> list[tuple[str, Intent]]:
    """The unfinished jobs of gone clients, now this client's, with their requests; waiting at
    most ``wait`` s (``None``: as long as it takes) for requests still within their deadline."""
    found: dict[str, Intent] = {}
    give_up = anyio.current_time() + (math.inf if wait is None else wait)
    told = False
    while True:
        orphans = await ledger.unfinished(orphaned_only=True)
        stale = {intent.intent_id for intent in await ledger.stale_intents()}
        waiting: list[Intent] = []
        for intent in orphans:
            known = intent.state in ("answered", "settled")  # jobs known, still running
            if not known and intent.intent_id not in stale:
                waiting.append(intent)  # sent by a gone client, and possibly still landing
                continue
            taken = await ledger.take_over(intent.intent_id)
            if taken is None:
                continue
            ids = taken.pending if known else await _settle(ledger, reconciler, taken)
            for generation_id in ids:
                if plausible_id(generation_id):
                    found[generation_id] = taken
                else:
                    logger.warning(
                        "recover(): job %.80r of an enqueue of %s cannot be watched (not an id "
                        "that can be put in a URL); look for it in client.list_generations()",
                        generation_id,
                        taken.model,
                    )
        # One reading of the clock per pass: the sleep below is never negative (anyio refuses).
        now = anyio.current_time()
        if not waiting or now >= give_up:
            if waiting:
                logger.warning(
                    "recover(): %d request(s) of gone clients are still within their deadline; "
                    "call recover() again later to settle them",
                    len(waiting),
                )
            return list(found.items())
        if not told:  # a wait of up to twice the request timeout deserves a word
            told = True
            # The deadlines are on their senders' clocks: on this host, most likely.
            last = max(intent.deadline for intent in waiting) - time.time()
            logger.warning(
                "recover(): %d request(s) a gone client sent may still reach the server; "
                "waiting up to %.1f s, until they cannot, to settle them",
                len(waiting),
                max(0.0, min(last, give_up - now)),
            )
        await anyio.sleep(min(1.0, give_up - now))


async def _settle(ledger: Ledger, reconciler: Reconciler, intent: Intent) -> list[str]:
    """The ids a gone client's unanswered request made. Its window rests on its sender's estimate
    of the server's clock, else on ours: unverified, so its reach is wide (see ``_clock``)."""
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
        if ids is not None:
            return ids
        how: Settlement = "never_created"
    except AmbiguousEnqueueError as exc:
        logger.warning(
            "recover(): a gone client's enqueue of %s cannot be settled: %s (candidates: %s)",
            intent.model,
            exc,
            ", ".join(exc.candidate_ids) or "none",
        )
        how = "ambiguous"
    except OxenError as exc:
        logger.warning("recover(): could not look up a gone client's enqueue: %s", exc)
        return []
    try:
        await ledger.mark_settled(intent.intent_id, how)
    except LedgerError as exc:
        logger.warning("recover(): the ledger could not settle %s: %s", intent.intent_id, exc)
    return []
