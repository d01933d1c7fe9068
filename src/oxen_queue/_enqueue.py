"""Enqueueing without ever creating a job twice, or losing one to a cancelled caller.

**Who runs it.** An enqueue is handed to the client: a small pool of worker tasks in the
client's own task group sends it, so the caller only awaits its outcome. A caller cancelled
while its request waits its turn withdraws it (nothing was sent). A caller cancelled while it
is in flight (``task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``, an anyio or trio
scope: none of them reaches the worker) abandons it: the worker still reads the answer, the
job is registered with the client, and a ``generate()`` that owned it has it cancelled
upstream.

**Written ahead.** Before each ``POST /api/ai/queue`` the request is recorded in the enqueue
ledger (:mod:`._ledger`: this process's memory by default, or SQLite or PostgreSQL shared by
every process on the key), and its ids are recorded when the answer arrives, so no billed job
is ever unknown to the ledger, whatever happens to the process.

**Never twice.** The API has no idempotency key, so the request is sent again only when the
server certainly did not process it (429, 503, a connection never established; see
``_retry``). When the answer is lost after the request left (a read timeout, a connection cut
mid-body, a 502 or 504 from a proxy, a 200 whose body is garbled), the job may exist and be
billed: the request is *reconciled* (:mod:`._reconcile`) against the server's rows and the
ledger, never blindly resent. Its jobs are adopted when they can be told apart, the request
is sent again when it certainly created none, and :class:`AmbiguousEnqueueError` (naming the
candidates) is raised otherwise, or when the look outlasts the retry policy's deadline.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio

from ._exceptions import (
    AmbiguousEnqueueError,
    APIConnectionError,
    ClientClosedError,
    OxenError,
)
from ._ledger import LedgerError
from ._reconcile import Reconciler
from ._retry import RetryPolicy, is_ambiguous, is_refused, retrying_call
from ._signal import Signal

if TYPE_CHECKING:
    import httpx
    from anyio.abc import TaskGroup

    from ._api import QueueEndpoints
    from ._clock import ServerClock
    from ._ledger import Ledger

__all__ = ["Enqueuer"]

logger = logging.getLogger("oxen_queue")

_OWNED_LIMIT: Final = 200_000  # ids remembered as ours; old ones cannot match a new request

IdsCallback = Callable[[list[str]], object]
FailedCallback = Callable[[BaseException, bool], object]
"""Told once how an enqueue that created nothing ended, and whether it may have been sent."""


class _Op:
    """One enqueue handed to the workers, and its outcome."""

    __slots__ = ("abandoned", "count", "done", "model", "on_abandoned", "on_created", "on_failed",
                 "outcome", "params", "state", "timeout")  # fmt: skip

    def __init__(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        on_created: IdsCallback,
        on_abandoned: IdsCallback | None,
        on_failed: FailedCallback | None,
        timeout: httpx.Timeout | None,
    ) -> None:
        self.timeout = timeout
        self.on_failed = on_failed
        self.model = model
        self.params = params
        self.count = count
        self.on_created = on_created
        self.on_abandoned = on_abandoned
        self.state: Literal["queued", "running", "withdrawn", "done"] = "queued"
        self.abandoned = False
        self.outcome: list[str] | OxenError | None = None
        self.done = Signal()

    def finish(self, outcome: list[str] | OxenError, *, sent: bool = True) -> None:
        self.outcome = outcome
        self.state = "done"
        self.done.set()
        if isinstance(outcome, OxenError) and self.on_failed is not None:
            self.on_failed(outcome, sent)


class Enqueuer:
    """Sends enqueue requests from the client's own tasks and reconciles the ambiguous ones.

    Args:
        api: The endpoints.
        ledger: The enqueue ledger, written before each request and after its answer.
        clock: The server's clock, for the windows in which a request's rows may show.
        retry: How refused enqueues are retried, and the deadline of a reconciliation.
        attempt_deadline: Seconds one attempt may take (``None``: no limit); with the same
            again for the server, it bounds how long a request may be in flight.
        workers: How many enqueues may run at once (read each time a worker may start or
            take its next enqueue: it follows the adaptive bound).
        on_retry: Told of each refused attempt that is sent again (a counter).
        settle_delay: Seconds between the two looks that conclude no job was made.
    """

    def __init__(
        self,
        api: QueueEndpoints,
        *,
        ledger: Ledger,
        clock: ServerClock,
        retry: RetryPolicy,
        attempt_deadline: float | None,
        workers: Callable[[], int],
        on_retry: Callable[[], None] | None = None,
        settle_delay: float = 1.0,
    ) -> None:
        self._api = api
        self.ledger = ledger
        self._clock = clock
        self._retry = retry
        # A request may be in flight for its whole attempt; the server may be slower still
        # to make its job. Past twice the attempt's deadline it is judged from the rows.
        self._in_flight_for = 2 * (attempt_deadline or 300.0)
        self._max_workers = workers
        self._on_retry = on_retry
        self.reconciler = Reconciler(
            api, ledger=ledger, clock=clock, owns=self.owns, settle_delay=settle_delay
        )
        self._task_group: TaskGroup | None = None
        self._queue: deque[_Op] = deque()
        self._workers = 0
        self._running = 0
        self._idle: anyio.Event | None = None
        self._closed = False
        # A set, and the same ids oldest first to forget them by: half an OrderedDict's size.
        self._owned: set[str] = set()
        self._owned_order: deque[str] = deque()
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
        if generation_id in self._owned:
            return
        self._owned.add(generation_id)
        self._owned_order.append(generation_id)
        while len(self._owned_order) > _OWNED_LIMIT:
            self._owned.discard(self._owned_order.popleft())

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
        on_failed: FailedCallback | None = None,
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
            on_failed: Called once if the enqueue ends without ids, with its error (or the
                caller's cancellation) and whether the request may have been sent: when the
                worker's outcome is known, not when a caller cancelled mid-request gives up.
            timeout: Each attempt's timeouts; ``None``: the client's.

        Raises:
            AmbiguousEnqueueError: The job's existence could not be settled.
            ClientClosedError: The client closed first.
            OxenError: The request was refused for good (400, 401, ...), or kept being
                refused (429, 503) past the retry policy.
        """
        if self._closed or self._task_group is None:
            raise ClientClosedError("the client is closed")
        op = _Op(model, params, count, on_created, on_abandoned, on_failed, timeout)
        self._queue.append(op)
        self._top_up()
        try:
            await op.done.wait()
        except BaseException as exc:
            if op.state == "queued":
                op.state = "withdrawn"  # never sent: the worker will skip it
                if on_failed is not None:
                    on_failed(exc, False)
            else:
                op.abandoned = True  # its worker tells on_failed how it ended
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
                op.finish(
                    ClientClosedError("the client closed before this enqueue was sent"), sent=False
                )
        if self._running:
            self._idle = anyio.Event()
            with anyio.move_on_after(grace):
                await self._idle.wait()

    # -- the workers ----------------------------------------------------------------------

    def _top_up(self) -> None:
        """Start workers while enqueues wait and the bound on requests in flight allows more
        (it grows as the adaptive bound does; workers beyond it stop after their enqueue)."""
        assert self._task_group is not None
        wanted = min(self._max_workers(), len(self._queue))
        while self._workers < wanted:
            self._workers += 1
            self._task_group.start_soon(self._work)

    async def _work(self) -> None:
        try:
            while self._queue and self._workers <= self._max_workers():
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
                if not self._closed:
                    self._top_up()
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
        ledger = self.ledger
        last: list[tuple[str, float]] = []  # the latest attempt's intent and send time

        async def write_ahead() -> None:
            # Once the request has its slot (the pacer may have held it): its true send time.
            sent = time.time()
            low, high = self._clock.offset
            intent = await ledger.record_intent(
                model=model,
                params=params,
                count=count,
                deadline=sent + self._in_flight_for,
                sent_at=sent,
                sent_at_server=sent + (low + high) / 2 if self._clock.known else None,
            )
            last[:] = [(intent, sent)]

        async def attempt() -> list[str]:
            last.clear()
            try:
                ids = await self._api.enqueue(body, count, timeout=timeout, on_admitted=write_ahead)
            except OxenError as exc:
                if last and not is_ambiguous(exc):  # refused, for now (429) or for good (400)
                    await self._settled(last[0][0], "refused")
                raise
            except Exception as exc:
                # No code path expects this; the request may have landed, so reconcile.
                logger.error("oxen_queue: POST /api/ai/queue failed unexpectedly", exc_info=exc)
                raise APIConnectionError(
                    f"POST /api/ai/queue: {type(exc).__name__}: {exc}", request_sent=True
                ) from exc
            ((intent, sent),) = last
            self.reconciler.note_sent(ids, sent=sent, received=time.time())
            try:
                await ledger.record_ids(intent, ids)
            except LedgerError as exc:  # the job exists: watch it regardless
                logger.error("enqueue of %s: the ledger did not take ids %s: %s", model, ids, exc)
            return ids

        for _ in range(self._retry.attempts):
            try:
                ids = await retrying_call(
                    attempt,
                    policy=self._retry,
                    retryable=is_refused,
                    what="POST /api/ai/queue",
                    on_retry=self._on_retry,
                )
            except OxenError as exc:
                if not is_ambiguous(exc) or not last:
                    raise
                cause = exc
            else:
                claim(ids)
                return ids
            ((intent, sent),) = last
            logger.debug("enqueue of %s: answer lost (%s); reconciling", model, cause)
            found = await self._reconcile(intent, model, params, count, sent, cause)
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

    async def _reconcile(
        self,
        intent: str,
        model: str,
        params: Mapping[str, Any],
        count: int,
        sent: float,
        cause: OxenError,
    ) -> list[str] | None:
        """Settle one lost answer within the retry policy's deadline (see ``_reconcile``)."""
        await self.ledger.mark_lost(intent)
        window = self._clock.server_window(sent, time.time())
        deadline = self._retry.deadline
        try:
            with anyio.move_on_after(math.inf if deadline is None else deadline):
                found = await self.reconciler.settle(
                    intent, model=model, params=params, count=count, window=window, cause=cause
                )
                if found is None:
                    await self._settled(intent, "resent")
                return found
        except AmbiguousEnqueueError:
            await self._settled(intent, "ambiguous")
            raise
        except OxenError as exc:
            await self._settled(intent, "ambiguous")
            raise AmbiguousEnqueueError(
                f"enqueue of {model}: the answer was lost ({cause}) and the job could not "
                f"be looked up ({exc}); it was not sent again",
                model=model,
                params=params,
            ) from exc
        await self._settled(intent, "ambiguous")
        raise AmbiguousEnqueueError(
            f"enqueue of {model}: the answer was lost ({cause}) and the job could not be "
            f"settled within the {deadline:g} s retry deadline; it was not sent again",
            model=model,
            params=params,
        )

    async def _settled(self, intent: str, how: Literal["refused", "resent", "ambiguous"]) -> None:
        try:
            await self.ledger.mark_settled(intent, how)
        except LedgerError as exc:
            logger.warning("the ledger could not settle request %s (%s): %s", intent, how, exc)
