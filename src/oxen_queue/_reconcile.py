"""Reconciling a request whose answer was lost: which rows on the server are its jobs?

The API has no idempotency key, so a job is recognised by its model and exact parameters
(rows carry exactly the submitted ones), made within the request's window on the *server's*
clock (:mod:`._clock`). What tells two identical requests apart is the enqueue ledger
(:mod:`._ledger`), shared by every client that may enqueue with the same key:

a. wait until no other request with the same fingerprint is in flight, in any process
   sharing the ledger (its answer would name some of the same rows);
b. look for matching rows in the window, and drop every id any request already holds;
c. claim what remains, atomically (two claimers never get the same row), when the rows can be
   told apart: as many as this request and the other lost ones with the same fingerprint
   await. More than that means rows made by clients outside the ledger (the Oxen web UI,
   another key's scripts): the outcome is **ambiguous** and :class:`AmbiguousEnqueueError`
   names the candidates. Too few on two looks a moment apart: ambiguous as well.
d. No candidate on two looks a moment apart: the request created nothing, and the caller may
   send it again (unless a 2xx answer had begun, which proves a job exists: ambiguous).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._exceptions import AmbiguousEnqueueError, OxenError
from ._ledger import InFlightError, Ledger, fingerprint
from ._params import QUEUE_FIELDS
from ._retry import certainly_created

if TYPE_CHECKING:
    from ._api import QueueEndpoints
    from ._clock import ServerClock
    from ._models import GenerationRecord

__all__ = ["Reconciler"]

logger = logging.getLogger("oxen_queue")

_HISTORY_PAGE: Final = 1000  # the largest page_size /api/ai/generations allows
_MAX_HISTORY_PAGES: Final = 20  # 20,000 rows: a lost answer's job is among the newest
_SENT_TIMES: Final = 4096  # own requests whose rows can still teach the clock


class Reconciler:
    """Finds and claims the jobs of requests whose answers were lost.

    Args:
        api: The endpoints.
        ledger: The enqueue ledger (shared, or this process's memory).
        clock: The server's clock, as estimated from its answers.
        owns: Whether this process already holds an id (reattached generations included).
        settle_delay: Seconds between the two looks that conclude nothing was made.
    """

    def __init__(
        self,
        api: QueueEndpoints,
        *,
        ledger: Ledger,
        clock: ServerClock,
        owns: Callable[[str], bool],
        settle_delay: float = 1.0,
    ) -> None:
        self._api = api
        self._ledger = ledger
        self._clock = clock
        self._owns = owns
        self._settle_delay = settle_delay
        self._sent: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def note_sent(self, ids: list[str], *, sent: float, received: float) -> None:
        """Remember when our own jobs were made: their rows' timestamps teach the clock."""
        for generation_id in ids:
            self._sent[generation_id] = (sent, received)
        while len(self._sent) > _SENT_TIMES:
            self._sent.popitem(last=False)

    async def settle(
        self,
        intent_id: str,
        *,
        model: str,
        params: Mapping[str, Any],
        count: int,
        window: tuple[int, int],
        cause: OxenError | None,
    ) -> list[str] | None:
        """The ids a request without an answer created, claimed for it in the ledger.

        Args:
            intent_id: The request's intent (``lost``, or taken over).
            model: Its model.
            params: Its exact parameters.
            count: How many generations it asked for.
            window: The first and last ``enqueued_at`` its rows may carry (server seconds).
            cause: Why its answer is missing (a 2xx that began proves a job exists);
                ``None`` for a request whose sender died.

        Returns:
            The claimed ids, or ``None`` when it certainly created nothing.

        Raises:
            AmbiguousEnqueueError: The jobs can be neither told apart nor ruled out.
            OxenError: The rows could not be read.
        """
        key = fingerprint(model, params)
        empty = short = 0
        while True:
            # a. Requests with this fingerprint still in flight would claim the same rows.
            await self._ledger.wait_idle(key, exclude_intent=intent_id, timeout=None)
            # b. The order of these reads makes them one consistent picture: a request sent
            # after the wait whose job is among the rows is still in flight, or its ids are
            # held, by the time they are read; a sibling claiming meanwhile is counted among
            # the lost ones and its ids among the held ones (it is over-awaited, never missed).
            rows = await self._candidates(model, params, window)
            others = await self._ledger.lost(key, exclude_intent=intent_id)
            if await self._busy(key, intent_id):
                continue
            held = await self._ledger.claimed_ids(key)
            free = [r.generation_id for r in rows if r.generation_id not in held]
            if not free:
                empty += 1
                if empty < 2:
                    await anyio.sleep(self._settle_delay)
                    continue
                if cause is not None and certainly_created(cause):
                    raise self._ambiguous(model, params, [], "a 2xx answer began, no job found")
                return None
            awaited = count + sum(max(0, i.count - len(i.ids)) for i in others)
            if len(free) > awaited:
                raise self._ambiguous(
                    model,
                    params,
                    free,
                    f"{len(free)} matching jobs and only {awaited} awaited by requests the "
                    "ledger knows: others were made by a client outside it",
                )
            if len(free) < count:
                short += 1
                if short < 2:
                    await anyio.sleep(self._settle_delay)
                    continue
                raise self._ambiguous(
                    model, params, free, f"{len(free)} of {count} jobs could be found"
                )
            try:
                claimed = await self._ledger.claim(intent_id, free)
            except InFlightError:
                continue  # a request with the same fingerprint started meanwhile: wait, look
            if len(claimed) >= count:
                logger.debug("enqueue of %s: adopted %s after a lost answer", model, claimed)
                return claimed[:count]

    async def _busy(self, key: str, intent_id: str) -> bool:
        """Whether a request with this fingerprint is in flight now (with a live owner)."""
        found = await self._ledger.in_flight(key, exclude_intent=intent_id)
        return any(intent.owner_alive for intent in found)

    def _ambiguous(
        self, model: str, params: Mapping[str, Any], candidates: list[str], why: str
    ) -> AmbiguousEnqueueError:
        return AmbiguousEnqueueError(
            f"enqueue of {model}: the answer was lost and its jobs cannot be settled ({why}); "
            "it was not sent again",
            model=model,
            params=params,
            candidate_ids=candidates,
        )

    async def _candidates(
        self, model: str, params: Mapping[str, Any], window: tuple[int, int]
    ) -> list[GenerationRecord]:
        """Rows that the request may have made: active ones, then recent history.

        History pages are read until rows older than the window: the job may have finished
        already, behind any number of newer ones. The order is not documented, so it is read
        from the first page and reversed at most once, and at most
        :data:`_MAX_HISTORY_PAGES` pages are read.
        """
        found: dict[str, GenerationRecord] = {}
        for row in await self._api.active_rows(model):
            self._consider(row, model, params, window, found)
        page, step, reversed_once = 1, 1, False
        for _ in range(_MAX_HISTORY_PAGES):
            history = await self._api.history_slice(model=model, page=page, page_size=_HISTORY_PAGE)
            stamps = [row.enqueued_at for row in history.rows if row.enqueued_at is not None]
            for row in history.rows:
                self._consider(row, model, params, window, found)
            last = history.total_pages
            oldest_first = len(stamps) > 1 and stamps[0] < stamps[-1]
            if page == 1 and not reversed_once and last > 1 and oldest_first:
                page, step, reversed_once = last, -1, True  # the newest rows are on the last page
                continue
            if not stamps or min(stamps) < window[0]:
                break
            page += step
            if not 1 <= page <= last or (reversed_once and page == 1):
                break
        else:
            raise AmbiguousEnqueueError(
                f"enqueue of {model}: the history holds more than {_MAX_HISTORY_PAGES} pages "
                "newer than the request; the job could not be looked up",
                model=model,
                params=params,
            )
        return sorted(found.values(), key=lambda row: (row.enqueued_at or 0, row.generation_id))

    def _consider(
        self,
        row: GenerationRecord,
        model: str,
        params: Mapping[str, Any],
        window: tuple[int, int],
        found: dict[str, GenerationRecord],
    ) -> None:
        if self._owns(row.generation_id):
            sent = self._sent.get(row.generation_id)
            if sent is not None and row.enqueued_at is not None:
                self._clock.observe_stamp(row.enqueued_at, sent=sent[0], received=sent[1])
            return
        if row.model_name not in (None, model) or row.enqueued_at is None:
            return
        if not window[0] <= row.enqueued_at <= window[1]:
            return
        # Rows carry exactly the parameters that were submitted ("present only if they were
        # submitted"): equal sets, not a superset, so another request's job never matches.
        sent_params = {k: v for k, v in params.items() if k not in QUEUE_FIELDS}
        if not _same(row.params, sent_params):
            return
        if all(_same(getattr(row, k), v) for k, v in params.items() if k in QUEUE_FIELDS):
            found.setdefault(row.generation_id, row)


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
