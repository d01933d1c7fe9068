"""Enqueueing without ever creating a job twice.

The API has no idempotency key, so ``POST /api/ai/queue`` is sent again only when the server
certainly did not process it (429, 503, a connection never established; see ``_retry``).

When the answer is lost after the request left (a read timeout, a connection cut mid-body, a
502 or 504 from a proxy, a 200 whose body is garbled), the job may exist and be billed. The
request is then *reconciled*, never blindly resent:

1. Wait until no other request of this client with the same model and parameters is still in
   flight (its answer would claim the same row), then look for rows that match: same model,
   exactly the parameters sent (rows carry the submitted ones, no more), enqueued no earlier
   than the request was sent (allowing for clock skew), and not already owned by this
   client. Active rows come from ``GET /api/ai/queue?model=``, finished ones from the history,
   ``GET /api/ai/generations?model=``, paged back to the moment the request was sent.
2. Enough matches: adopt them (oldest first) as the request's generations.
3. None, on two looks a moment apart: the evidence says the job was never created, so the
   request is sent again.
4. Some but too few, or the lookups themselves failing: the outcome cannot be known, and
   :class:`AmbiguousEnqueueError` is raised. Nothing is resent.

Limits: another process enqueueing the same model and parameters with the same key at the same
moment can be mistaken for ours; the server's clock must be within ``clock_skew`` of ours.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._exceptions import (
    AmbiguousEnqueueError,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    OxenError,
)
from ._models import GenerationRecord
from ._params import QUEUE_FIELDS
from ._retry import RetryPolicy, is_refused, retrying_call

if TYPE_CHECKING:
    from ._http import ApiSession

__all__ = ["Enqueuer", "is_ambiguous"]

logger = logging.getLogger("oxen_queue")

_AMBIGUOUS_STATUSES: Final = frozenset({500, 502, 504})
_OWNED_LIMIT: Final = 200_000  # ids remembered as ours; old ones cannot match a new request
_HISTORY_PAGE: Final = 1000  # the largest page_size /api/ai/generations allows


class _ShapeError(OxenError):
    """A 2xx enqueue answer without the ids: the jobs exist, so reconcile."""


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed enqueue may nonetheless have created its job."""
    if isinstance(exc, APIStatusError):
        return exc.status_code in _AMBIGUOUS_STATUSES
    if isinstance(exc, APIConnectionError):
        return exc.request_sent
    return _certainly_created(exc)


def _certainly_created(exc: BaseException) -> bool:
    """A 2xx answer that could not be read: the server did create the jobs."""
    return isinstance(exc, APIResponseValidationError | _ShapeError)


def _fingerprint(model: str, params: Mapping[str, Any]) -> str:
    return json.dumps([model, params], sort_keys=True, default=str)


class Enqueuer:
    """Sends enqueue requests and reconciles the ambiguous ones."""

    def __init__(
        self,
        session: ApiSession,
        *,
        retry: RetryPolicy,
        clock_skew: float = 30.0,
        settle_delay: float = 1.0,
    ) -> None:
        self._session = session
        self._retry = retry
        self._clock_skew = clock_skew
        self._settle_delay = settle_delay
        self._owned: OrderedDict[str, None] = OrderedDict()
        self._in_flight: Counter[str] = Counter()
        self._drained: dict[str, anyio.Event] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.reconciled = 0
        """How many ambiguous enqueues were settled by adopting the jobs they had created."""
        self.resent = 0
        """How many ambiguous enqueues were shown never to have created a job, and resent."""

    def own(self, generation_id: str) -> None:
        """Remember an id as this client's, so reconciliation never adopts it again."""
        self._owned[generation_id] = None
        self._owned.move_to_end(generation_id)
        while len(self._owned) > _OWNED_LIMIT:
            self._owned.popitem(last=False)

    def owns(self, generation_id: str) -> bool:
        return generation_id in self._owned

    async def enqueue(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        on_created: Callable[[list[str]], None],
    ) -> list[str]:
        """Create ``count`` generations; return their ids, each created exactly once.

        Args:
            model: The model id.
            params: The request's parameters, already checked.
            count: How many generations (``num_generations``).
            on_created: Called with the ids the moment they are known, inside the section
                shielded from cancellation: a caller cancelled mid-request still has its jobs
                accounted for.

        Raises:
            AmbiguousEnqueueError: The job's existence could not be settled.
            OxenError: The request was refused for good (400, 401, ...), or kept being
                refused (429, 503) past the retry policy.
        """
        body: dict[str, Any] = {"model": model, **params}
        if count != 1:
            body["num_generations"] = count
        key = _fingerprint(model, params)

        async def attempt() -> list[str]:
            # Shielded while the request is in flight: a cancellation arriving now would
            # lose the answer, and with it the id of a job that exists and is billed.
            # The waits between attempts are not shielded: nothing is in flight then.
            with anyio.CancelScope(shield=True):
                data = await self._session.send("POST", "api/ai/queue", json_body=body)
                ids = _created_ids(data, count)
                self._claim(ids, on_created)
            return ids

        for _ in range(self._retry.attempts):
            sent_at = time.time()
            self._in_flight[key] += 1
            try:
                return await retrying_call(
                    attempt, policy=self._retry, retryable=is_refused, what="POST /api/ai/queue"
                )
            except OxenError as exc:
                if not is_ambiguous(exc):
                    raise
                cause = exc
            finally:
                self._in_flight[key] -= 1
                if not self._in_flight[key]:
                    del self._in_flight[key]
                    drained = self._drained.pop(key, None)
                    if drained is not None:
                        drained.set()
            logger.debug("enqueue of %s: answer lost (%s); reconciling", model, cause)
            with anyio.CancelScope(shield=True):
                # Rows match one fingerprint only (parameters are compared exactly), so one
                # reconciliation per fingerprint at a time is enough for two never to adopt
                # the same row.
                lock = self._locks.setdefault(key, anyio.Lock())
                try:
                    async with lock:
                        found = await self._reconcile(model, params, count, key, sent_at, cause)
                        if found is not None:
                            self.reconciled += 1
                            self._claim(found, on_created)
                            return found
                finally:
                    if not lock.statistics().tasks_waiting and self._locks.get(key) is lock:
                        del self._locks[key]
            self.resent += 1
            logger.debug("enqueue of %s: no job was created; sending it again", model)
        raise AmbiguousEnqueueError(
            f"enqueue of {model} kept losing its answer; gave up after "
            f"{self._retry.attempts} attempts, each shown never to have created a job",
            model=model,
            params=params,
        )

    def _claim(self, ids: list[str], on_created: Callable[[list[str]], None]) -> None:
        for generation_id in ids:
            self.own(generation_id)
        on_created(ids)

    async def _reconcile(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        key: str,
        sent_at: float,
        cause: OxenError,
    ) -> list[str] | None:
        """Adopt the jobs a lost request created; ``None`` if it certainly created none."""
        # Another request with the same fingerprint still in flight would claim the same
        # rows when its answer arrives: let it land first (bounded: requests time out).
        with anyio.move_on_after(self._retry.deadline or 120.0):
            while self._in_flight.get(key):
                await self._drained.setdefault(key, anyio.Event()).wait()
        not_before = sent_at - self._clock_skew
        for look in range(2):
            try:
                rows = await self._candidates(model, params, not_before)
            except OxenError as exc:
                raise AmbiguousEnqueueError(
                    f"enqueue of {model}: the answer was lost ({cause}) and the job could not "
                    f"be looked up ({exc}); it was not sent again",
                    model=model,
                    params=params,
                ) from exc
            if len(rows) >= count:
                chosen = [row.generation_id for row in rows[:count]]
                logger.debug("enqueue of %s: adopted %s after a lost answer", model, chosen)
                return chosen
            if rows or (look == 1 and _certainly_created(cause)):
                raise AmbiguousEnqueueError(
                    f"enqueue of {model}: the answer was lost and {len(rows)} of {count} "
                    "jobs could be found; it was not sent again",
                    model=model,
                    params=params,
                )
            if look == 0:
                await anyio.sleep(self._settle_delay)
        return None

    async def _candidates(
        self, model: str, params: Mapping[str, Any], not_before: float
    ) -> list[GenerationRecord]:
        """Rows that this request may have created: active ones, then recent history."""
        found: dict[str, GenerationRecord] = {}
        active = await self._session.call("GET", "api/ai/queue", params={"model": model})
        self._collect(active, model, params, not_before, found)
        # History pages are scanned until rows older than the request: it may have finished
        # already, behind any number of newer jobs. The order is not documented, so it is
        # read from the first page.
        page, step, last = 1, 1, None
        while True:
            data = await self._session.call(
                "GET",
                "api/ai/generations",
                params={"model": model, "page": page, "page_size": _HISTORY_PAGE},
            )
            stamps = self._collect(data, model, params, not_before, found)
            total = data.get("total_pages") if isinstance(data, Mapping) else None
            last = total if isinstance(total, int) and total >= 1 else 1
            if page == 1 and len(stamps) > 1 and stamps[0] < stamps[-1] and last > 1:
                page, step = last, -1  # oldest first: the newest rows are on the last page
                continue
            if not stamps or min(stamps) < not_before:
                break
            page += step
            if not 1 <= page <= last:
                break
        return sorted(found.values(), key=lambda row: (row.enqueued_at or 0, row.generation_id))

    def _collect(
        self,
        payload: object,
        model: str,
        params: Mapping[str, Any],
        not_before: float,
        found: dict[str, GenerationRecord],
    ) -> list[int]:
        """Add the matching rows of a list answer to ``found``; return every row's timestamp."""
        rows = payload.get("generations") if isinstance(payload, Mapping) else None
        stamps: list[int] = []
        for raw in rows if isinstance(rows, list) else ():
            try:
                row = GenerationRecord.model_validate(raw)
            except ValueError:
                continue
            if row.enqueued_at is not None:
                stamps.append(row.enqueued_at)
            if self._matches(row, model, params, not_before):
                found.setdefault(row.generation_id, row)
        return stamps

    def _matches(
        self, row: GenerationRecord, model: str, params: Mapping[str, Any], not_before: float
    ) -> bool:
        if self.owns(row.generation_id) or row.model_name not in (None, model):
            return False
        if row.enqueued_at is None or row.enqueued_at < not_before:
            return False
        # Rows carry exactly the parameters that were submitted ("present only if they were
        # submitted"): equal sets, not a superset, so another request's job never matches.
        sent = {k: v for k, v in params.items() if k not in QUEUE_FIELDS}
        if not _same(row.params, sent):
            return False
        return all(_same(getattr(row, k), v) for k, v in params.items() if k in QUEUE_FIELDS)


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _created_ids(data: object, count: int) -> list[str]:
    generations = data.get("generations") if isinstance(data, Mapping) else None
    ids = (
        [
            g["generation_id"]
            for g in generations or ()
            if isinstance(g, Mapping) and isinstance(g.get("generation_id"), str)
        ]
        if isinstance(generations, list)
        else []
    )
    if len(ids) != count:
        raise _ShapeError(
            f"expected {count} generation ids in the enqueue answer, got {data!r:.200}"
        )
    return ids
