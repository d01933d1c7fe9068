"""Enqueueing without ever creating a job twice, or losing one to a cancelled caller.

**Who runs it.** An enqueue is handed to the client: a small pool of worker tasks in the
client's own task group sends it, so the caller only awaits its outcome. A caller cancelled
while its request waits its turn withdraws it (nothing was sent). A caller cancelled while it
is in flight (``task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``, an anyio or trio
scope: none of them reaches the worker) abandons it: the worker still reads the answer, the
job is registered with the client, and a ``generate()`` that owned it has it cancelled
upstream.

**Never twice.** The API has no idempotency key, so ``POST /api/ai/queue`` is sent again only
when the server certainly did not process it (429, 503, a connection never established; see
``_retry``). When the answer is lost after the request left (a read timeout, a connection cut
mid-body, a 502 or 504 from a proxy, a 200 whose body is garbled), the job may exist and be
billed. The request is then *reconciled*, never blindly resent:

1. Wait until no other request of this client with the same model and parameters is still in
   flight (its answer would claim the same row), then look for rows that match: same model,
   exactly the parameters sent (rows carry the submitted ones, no more), enqueued no earlier
   than the request was sent (allowing for clock skew), and not already owned by this
   client. Active rows come from ``GET /api/ai/queue?model=``, finished ones from the history,
   ``GET /api/ai/generations?model=``, paged back to the moment the request was sent (at most
   :data:`_MAX_HISTORY_PAGES` pages, whichever order the server lists them in).
2. Enough matches: adopt them (oldest first) as the request's generations.
3. None, on two looks a moment apart: the evidence says the job was never created, so the
   request is sent again.
4. Some but too few, the lookups failing, or the look outlasting the retry policy's deadline:
   the outcome cannot be known, and :class:`AmbiguousEnqueueError` is raised. Nothing is
   resent.

Limits: another process enqueueing the same model and parameters with the same key at the same
moment can be mistaken for ours; the server's clock must be within ``clock_skew`` of ours.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio

from ._exceptions import (
    AmbiguousEnqueueError,
    APIConnectionError,
    ClientClosedError,
    OxenError,
)
from ._params import QUEUE_FIELDS
from ._retry import RetryPolicy, certainly_created, is_ambiguous, is_refused, retrying_call

if TYPE_CHECKING:
    import httpx
    from anyio.abc import TaskGroup

    from ._api import QueueEndpoints
    from ._models import GenerationRecord

__all__ = ["Enqueuer"]

logger = logging.getLogger("oxen_queue")

_OWNED_LIMIT: Final = 200_000  # ids remembered as ours; old ones cannot match a new request
_HISTORY_PAGE: Final = 1000  # the largest page_size /api/ai/generations allows
_MAX_HISTORY_PAGES: Final = 20  # 20,000 rows: a lost answer's job is among the newest

IdsCallback = Callable[[list[str]], object]


def _fingerprint(model: str, params: Mapping[str, Any]) -> str:
    return json.dumps([model, params], sort_keys=True, default=str)


class _Op:
    """One enqueue handed to the workers, and its outcome."""

    __slots__ = ("abandoned", "count", "done", "model", "on_abandoned", "on_created", "outcome",
                 "params", "state", "timeout")  # fmt: skip

    def __init__(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        on_created: IdsCallback,
        on_abandoned: IdsCallback | None,
        timeout: httpx.Timeout | None,
    ) -> None:
        self.timeout = timeout
        self.model = model
        self.params = params
        self.count = count
        self.on_created = on_created
        self.on_abandoned = on_abandoned
        self.state: Literal["queued", "running", "withdrawn", "done"] = "queued"
        self.abandoned = False
        self.outcome: list[str] | OxenError | None = None
        self.done = anyio.Event()

    def finish(self, outcome: list[str] | OxenError) -> None:
        self.outcome = outcome
        self.state = "done"
        self.done.set()


class Enqueuer:
    """Sends enqueue requests from the client's own tasks and reconciles the ambiguous ones.

    Args:
        api: The endpoints.
        retry: How refused enqueues are retried, and the deadline of a reconciliation.
        workers: How many enqueues may run at once (read each time a worker may start).
        on_retry: Told of each refused attempt that is sent again (a counter).
        clock_skew: Seconds by which the server's clock may lag ours.
        settle_delay: Seconds between the two looks that conclude no job was made.
    """

    def __init__(
        self,
        api: QueueEndpoints,
        *,
        retry: RetryPolicy,
        workers: Callable[[], int],
        on_retry: Callable[[], None] | None = None,
        clock_skew: float = 30.0,
        settle_delay: float = 1.0,
    ) -> None:
        self._api = api
        self._retry = retry
        self._max_workers = workers
        self._on_retry = on_retry
        self._clock_skew = clock_skew
        self._settle_delay = settle_delay
        self._task_group: TaskGroup | None = None
        self._queue: deque[_Op] = deque()
        self._workers = 0
        self._running = 0
        self._idle: anyio.Event | None = None
        self._closed = False
        self._owned: OrderedDict[str, None] = OrderedDict()
        self._in_flight: Counter[str] = Counter()
        self._drained: dict[str, anyio.Event] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.reconciled = 0
        """How many ambiguous enqueues were settled by adopting the jobs they had created."""
        self.resent = 0
        """How many ambiguous enqueues were shown never to have created a job, and resent."""
        self.created = 0
        """How many generations were created (or adopted) by these enqueues."""

    def start(self, task_group: TaskGroup) -> None:
        """Run workers in the client's task group from now on."""
        self._task_group = task_group

    def own(self, generation_id: str) -> None:
        """Remember an id as this client's, so reconciliation never adopts it again."""
        self._owned[generation_id] = None
        self._owned.move_to_end(generation_id)
        while len(self._owned) > _OWNED_LIMIT:
            self._owned.popitem(last=False)

    def owns(self, generation_id: str) -> bool:
        return generation_id in self._owned

    # -- the caller's side ----------------------------------------------------------------

    async def enqueue(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        on_created: IdsCallback,
        *,
        on_abandoned: IdsCallback | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> list[str]:
        """Create ``count`` generations; return their ids, each created exactly once.

        Args:
            model: The model id.
            params: The request's parameters, already checked.
            count: How many generations (``num_generations``).
            on_created: Called with the ids the moment they are known, whether or not the
                caller is still waiting: every job is accounted for.
            on_abandoned: Called with the ids when they arrive after the caller was cancelled
                (``generate()`` cancels them upstream).
            timeout: Each attempt's timeouts; ``None``: the client's.

        Raises:
            AmbiguousEnqueueError: The job's existence could not be settled.
            ClientClosedError: The client closed first.
            OxenError: The request was refused for good (400, 401, ...), or kept being
                refused (429, 503) past the retry policy.
        """
        if self._closed or self._task_group is None:
            raise ClientClosedError("the client is closed")
        op = _Op(model, params, count, on_created, on_abandoned, timeout)
        self._queue.append(op)
        if self._workers < self._max_workers():
            self._workers += 1
            self._task_group.start_soon(self._work)
        try:
            await op.done.wait()
        except BaseException:
            if op.state == "queued":
                op.state = "withdrawn"  # never sent: the worker will skip it
            else:
                op.abandoned = True
            raise
        if isinstance(op.outcome, OxenError):
            raise op.outcome
        assert op.outcome is not None
        return op.outcome

    async def close(self, grace: float) -> None:
        """Refuse new enqueues, withdraw queued ones, and give those in flight ``grace`` s.

        Enqueues still running afterwards are cancelled with the client's task group; their
        callers get ``ClientClosedError``.
        """
        self._closed = True
        while self._queue:
            op = self._queue.popleft()
            if op.state == "queued":
                op.finish(ClientClosedError("the client closed before this enqueue was sent"))
        if self._running:
            self._idle = anyio.Event()
            with anyio.move_on_after(grace):
                await self._idle.wait()

    # -- the workers ----------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            while self._queue:
                op = self._queue.popleft()
                if op.state != "queued":
                    continue
                op.state = "running"
                self._running += 1
                try:
                    await self._run(op)
                finally:
                    self._running -= 1
                    if not self._running and self._idle is not None:
                        self._idle.set()
        finally:
            self._workers -= 1

    async def _run(self, op: _Op) -> None:
        def claim(ids: list[str]) -> None:
            for generation_id in ids:
                self.own(generation_id)
            self.created += len(ids)
            op.on_created(ids)
            if op.abandoned and op.on_abandoned is not None:
                op.on_abandoned(ids)

        try:
            ids = await self._create(op.model, op.params, op.count, claim, op.timeout)
        except OxenError as exc:
            op.finish(exc)
        except Exception as exc:
            logger.error("oxen_queue: enqueue of %s failed unexpectedly", op.model, exc_info=exc)
            error = OxenError(f"enqueue of {op.model} failed unexpectedly: {exc!r}")
            error.__cause__ = exc
            op.finish(error)
        except BaseException:  # the client's task group is being cancelled: it is closing
            op.finish(
                ClientClosedError(
                    f"the client closed while an enqueue of {op.model} was in flight; "
                    "its job may exist (look in client.list_generations())"
                )
            )
            raise
        else:
            op.finish(ids)

    # -- sending and reconciling --------------------------------------------------------

    async def _create(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        claim: IdsCallback,
        timeout: httpx.Timeout | None,
    ) -> list[str]:
        body: dict[str, Any] = {"model": model, **params}
        if count != 1:
            body["num_generations"] = count
        key = _fingerprint(model, params)

        async def attempt() -> list[str]:
            try:
                return await self._api.enqueue(body, count, timeout=timeout)
            except OxenError:
                raise
            except Exception as exc:
                # No code path expects this; the request may have landed, so reconcile.
                logger.error("oxen_queue: POST /api/ai/queue failed unexpectedly", exc_info=exc)
                raise APIConnectionError(
                    f"POST /api/ai/queue: {type(exc).__name__}: {exc}", request_sent=True
                ) from exc

        for _ in range(self._retry.attempts):
            sent_at = time.time()
            self._in_flight[key] += 1
            try:
                ids = await retrying_call(
                    attempt,
                    policy=self._retry,
                    retryable=is_refused,
                    what="POST /api/ai/queue",
                    on_retry=self._on_retry,
                )
                # Claimed before this request stops counting as in flight: a reconciliation
                # waiting on it must find these ids owned.
                claim(ids)
                return ids
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
            found = await self._settle(model, params, count, key, sent_at, cause)
            if found is not None:
                self.reconciled += 1
                claim(found)
                return found
            self.resent += 1
            logger.debug("enqueue of %s: no job was created; sending it again", model)
        raise AmbiguousEnqueueError(
            f"enqueue of {model} kept losing its answer; gave up after "
            f"{self._retry.attempts} attempts, each shown never to have created a job",
            model=model,
            params=params,
        )

    async def _settle(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        key: str,
        sent_at: float,
        cause: OxenError,
    ) -> list[str] | None:
        """Reconcile one lost answer, within the retry policy's deadline."""
        deadline = self._retry.deadline
        with anyio.move_on_after(math.inf if deadline is None else deadline):
            # Rows match one fingerprint only (parameters are compared exactly), so one
            # reconciliation per fingerprint at a time is enough for two never to adopt the
            # same row.
            lock = self._locks.setdefault(key, anyio.Lock())
            try:
                async with lock:
                    return await self._reconcile(model, params, count, key, sent_at, cause)
            finally:
                if not lock.statistics().tasks_waiting and self._locks.get(key) is lock:
                    del self._locks[key]
        raise AmbiguousEnqueueError(
            f"enqueue of {model}: the answer was lost ({cause}) and the job could not be "
            f"settled within the {deadline:g} s retry deadline; it was not sent again",
            model=model,
            params=params,
        )

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
        # rows when its answer arrives: let it land first (its own deadline bounds it).
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
            if rows or (look == 1 and certainly_created(cause)):
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
        for row in await self._api.active_rows(model):
            self._consider(row, model, params, not_before, found)
        # History pages are scanned until rows older than the request: it may have finished
        # already, behind any number of newer jobs. The order is not documented, so it is
        # read from the first page, and reversed at most once.
        page, step, reversed_once = 1, 1, False
        for _ in range(_MAX_HISTORY_PAGES):
            history = await self._api.history_slice(model=model, page=page, page_size=_HISTORY_PAGE)
            stamps = [row.enqueued_at for row in history.rows if row.enqueued_at is not None]
            for row in history.rows:
                self._consider(row, model, params, not_before, found)
            last = history.total_pages
            oldest_first = len(stamps) > 1 and stamps[0] < stamps[-1]
            if page == 1 and not reversed_once and last > 1 and oldest_first:
                page, step, reversed_once = last, -1, True  # the newest rows are on the last page
                continue
            if not stamps or min(stamps) < not_before:
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
        not_before: float,
        found: dict[str, GenerationRecord],
    ) -> None:
        if self._matches(row, model, params, not_before):
            found.setdefault(row.generation_id, row)

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
