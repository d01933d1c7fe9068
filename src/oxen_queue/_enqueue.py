"""Enqueueing without ever creating a job twice, or losing one to a cancelled caller.

Worker tasks in the client's task group send each enqueue: a caller cancelled while it waits
withdraws it, one cancelled in flight abandons it (its jobs are still registered). Each request
is written to the enqueue ledger (`_ledger`) before it is sent, and its ids when answered. With
no idempotency key, a request is sent again only when the server certainly did not process it
(429, 503, no connection; ``_retry``) or when reconciling its lost answer (`_reconcile`) proved
it made nothing. A 2xx answer is never sent again; every job it names, or fails to name, is
accounted for (`Enqueuer._answered`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio

from ._clock import Span
from ._exceptions import (
    AmbiguousEnqueueError,
    APIConnectionError,
    APIResponseValidationError,
    ClientClosedError,
    OxenError,
)
from ._ledger import LedgerError
from ._reconcile import Reconciler
from ._retry import RetryPolicy, certainly_created, is_ambiguous, is_refused, retrying_call
from ._signal import Signal

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._api import EnqueueAnswer, QueueEndpoints
    from ._clock import ServerClock
    from ._jobs import _Track
    from ._ledger import Ledger

logger = logging.getLogger("oxen_queue")

_OWNED_LIMIT: Final = 200_000  # ids remembered as ours; old ones cannot match a new request
_SENDS: Final = 3  # each after the last was shown to make nothing (retries count refusals)


@dataclass(eq=False, slots=True)
class _Op:
    """One enqueue handed to the workers, and its outcome."""

    track: _Track  # the request's model and params, and where its jobs go
    count: int
    api: QueueEndpoints
    state: Literal["queued", "running", "withdrawn", "done"] = "queued"
    abandoned: bool = False
    outcome: list[str] | OxenError | None = None
    ids: list[str] = field(default_factory=list)  # the jobs known to be this enqueue's so far
    done: Signal = field(default_factory=Signal)

    def finish(self, outcome: list[str] | OxenError, *, sent: bool = True) -> None:
        self.outcome = outcome
        self.state = "done"
        self.done.set()
        if isinstance(outcome, OxenError):
            self.track.failed(outcome, sent)


@dataclass(frozen=True, slots=True)
class _Request:
    """One sent request of an enqueue (of ``count`` of its jobs), written ahead as ``intent``."""

    op: _Op
    count: int
    intent: str
    sent: float

    def ambiguous(self, what: str) -> AmbiguousEnqueueError:
        model, params = self.op.track.model, self.op.track.params
        return AmbiguousEnqueueError(f"enqueue of {model}: {what}", model=model, params=params)


class Enqueuer:
    """Sends enqueues from the client's own tasks and reconciles those whose answer was lost.

    ``workers`` is read whenever a worker may start or take its next enqueue (it follows the
    adaptive bound); ``on_retry`` is told of each refused attempt that is sent again.
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
        on_retry: Callable[[BaseException | None], None],
    ) -> None:
        self.ledger = ledger
        self._clock = clock
        self._retry = retry
        # A request may be in flight for its whole attempt, and its job made later still.
        self._in_flight_for = 2 * (attempt_deadline or 300.0)
        self._max_workers = workers
        self._on_retry = on_retry
        self.reconciler = Reconciler(api, ledger, clock, self.owns)
        self._task_group: TaskGroup | None = None
        self._queue: deque[_Op] = deque()
        self._workers = 0
        self._running = 0
        self._idle: anyio.Event | None = None
        self._closed = False
        # The ids, and the same oldest first to forget them by: half an OrderedDict's size.
        self._owned: set[str] = set()
        self._owned_order: deque[str] = deque()
        self.created = 0  # generations created or adopted
        self.reconciled = 0  # lost answers settled by adopting their jobs
        self.resent = 0  # lost answers shown to have made nothing, and sent again

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group

    def own(self, generation_id: str) -> None:
        """Remember an id as this client's, so reconciliation never adopts it again."""
        if generation_id not in self._owned:
            self._owned.add(generation_id)
            self._owned_order.append(generation_id)
            if len(self._owned_order) > _OWNED_LIMIT:
                self._owned.discard(self._owned_order.popleft())

    def owns(self, generation_id: str) -> bool:
        return generation_id in self._owned

    async def enqueue(self, track: _Track, count: int, api: QueueEndpoints) -> list[str]:
        """Create ``count`` generations of ``track``'s request through ``api``, each exactly
        once; their ids. ``track`` gets them as soon as they are known, waited for or not
        (``track.abandoned`` too, if the caller gave up), else ``track.failed(error, sent)``
        once. Raises ``AmbiguousEnqueueError`` or ``APIResponseValidationError`` (a 2xx answer
        not made good; never sent again), their ``generation_ids`` the jobs made;
        ``ClientClosedError``; or the ``OxenError`` of a refusal.
        """
        if self._closed or self._task_group is None:
            error = ClientClosedError("the client is closed")
            track.failed(error, False)  # nothing was sent: whatever was reserved goes back
            raise error
        op = _Op(track, count, api)
        self._queue.append(op)
        self._top_up()
        try:
            await op.done.wait()
        except BaseException as exc:
            if op.state == "queued":
                op.state = "withdrawn"  # never sent: the worker will skip it
                track.failed(exc, False)
            else:
                op.abandoned = True  # its worker tells track.failed how it ended
            raise
        if isinstance(op.outcome, OxenError):
            raise op.outcome
        assert op.outcome is not None
        return op.outcome

    async def close(self, grace: float) -> None:
        """Refuse new enqueues, withdraw queued ones, give those in flight ``grace`` s."""
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

    def _top_up(self) -> None:
        """Start workers while enqueues wait, up to the bound (those past it stop when done)."""
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
                await self._run(op)
                if not self._closed:
                    self._top_up()
        finally:
            self._workers -= 1

    async def _run(self, op: _Op) -> None:
        token = op.track.trace.attach()  # the caller's context (and span), not this worker's
        self._running += 1
        try:
            ids = await self._create(op)
        except OxenError as exc:
            op.finish(exc)
        except Exception as exc:
            logger.error(
                "oxen_queue: enqueue of %s failed unexpectedly", op.track.model, exc_info=exc
            )
            error = OxenError(f"enqueue of {op.track.model} failed unexpectedly: {exc!r}")
            error.__cause__ = exc
            op.finish(error)
        except BaseException:  # the client's task group is being cancelled: it is closing
            made = f"; its jobs {', '.join(op.ids)} exist" if op.ids else ""
            op.finish(
                ClientClosedError(
                    f"the client closed while an enqueue of {op.track.model} was in flight{made}; "
                    "others may exist (look in client.list_generations())",
                    generation_ids=op.ids,
                )
            )
            raise
        else:
            op.finish(ids)
        finally:
            op.track.trace.detach(token)
            self._running -= 1
            if not self._running and self._idle is not None:
                self._idle.set()

    def _claim(self, op: _Op, ids: list[str]) -> None:
        for generation_id in ids:
            self.own(generation_id)
        self.created += len(ids)
        op.ids.extend(ids)
        op.track(ids)
        if op.abandoned:
            op.track.abandoned(ids)

    async def _create(self, op: _Op) -> list[str]:
        model, params, count, trace = op.track.model, op.track.params, op.count, op.track.trace
        body: dict[str, Any] = {"model": model, **params}
        if count != 1:
            body["num_generations"] = count
        last: list[_Request] = []  # the latest attempt's, once written ahead

        async def write_ahead() -> None:
            # Once the request has its slot (the pacer may have held it): its true send time.
            last[:] = [await self._write_ahead(op, count, time.time())]

        async def attempt() -> tuple[EnqueueAnswer, float]:
            last.clear()
            try:
                answer = await op.api.enqueue(body, count, on_admitted=write_ahead)
            except OxenError as exc:
                if last and not is_ambiguous(exc):  # refused, for now (429) or for good (400)
                    await self._settled(last[0].intent, "refused")
                raise
            except Exception as exc:
                # No code path expects this; the request may have landed, so reconcile.
                logger.error("oxen_queue: POST /api/ai/queue failed unexpectedly", exc_info=exc)
                raise APIConnectionError(
                    f"POST /api/ai/queue: {type(exc).__name__}: {exc}", request_sent=True
                ) from exc
            return answer, time.time()

        def retried(error: BaseException | None, delay: float) -> None:
            self._on_retry(error)
            trace.retried(error, delay)

        for _ in range(_SENDS):
            try:
                answer, received = await retrying_call(
                    attempt,
                    policy=self._retry,
                    retryable=is_refused,
                    what="POST /api/ai/queue",
                    on_retry=retried,
                )
            except OxenError as exc:
                if not is_ambiguous(exc) or not last:
                    raise
                cause = exc
            else:
                return await self._answered(last[0], answer, received)
            logger.debug("enqueue of %s: answer lost (%s); reconciling", model, cause)
            trace.answer_lost(cause)
            found = await self._reconcile(last[0], cause=cause, created=certainly_created(cause))
            if found is not None:
                self.reconciled += 1
                trace.reconciled(len(found))
                self._claim(op, found)
                return found
            self.resent += 1
            trace.resent()
            logger.debug("enqueue of %s: no job was created; sending it again", model)
        raise last[0].ambiguous(
            f"kept losing its answer; gave up after {_SENDS} sends, each shown never to have "
            "created a job"
        )

    async def _write_ahead(self, op: _Op, count: int, sent: float) -> _Request:
        intent = await self.ledger.record_intent(
            model=op.track.model,
            params=op.track.params,
            count=count,
            deadline=sent + self._in_flight_for,
            sent_at=sent,
            sent_at_server=self._clock.server_time(sent),
        )
        return _Request(op, count, intent, sent)

    async def _answered(
        self, request: _Request, answer: EnqueueAnswer, received: float
    ) -> list[str]:
        """Account for every job a 2xx answer names, and look for those it does not name;
        its ids, or the error that names every job the request holds. Never sent again.

        Each watchable id (``_ids``) is taken by this request, recorded in the ledger, watched
        and found again by ``recover()``. Then, if the answer was not as documented:

        * ids this client holds already, or another client's request recorded (a shared
          ledger), are not taken twice: the answer is wrong about them, and the error says so;
        * ids that cannot be watched are recorded and named on the error, never put in a URL;
        * jobs it does not name (fewer entries than asked, an entry without a string id, an
          id named twice or colliding) may exist: they are looked for as a lost answer's are,
          "nothing was made" ruled out; adopted, they join the others (a warning if that made
          the answer good), else ``AmbiguousEnqueueError``;
        * more jobs than asked are all watched, and named on the error
          (``APIResponseValidationError``).
        """
        # The one place an enqueue's ids become the client's (``ClientCore.track`` would hand
        # two enqueues the same handle). No await: of two answers naming one id, the first
        # takes it; one this client holds already is not this request's, whatever it says.
        model = request.op.track.model
        fresh: list[str] = []
        taken: list[str] = []
        for generation_id in answer.ids:
            if self.owns(generation_id):
                taken.append(generation_id)
            else:
                self.own(generation_id)
                fresh.append(generation_id)
        named = [*fresh, *answer.unwatchable]
        self.reconciler.note_sent(fresh, sent=request.sent, received=received)
        if named:
            try:  # ids another client's request recorded (a shared ledger) stay with it
                conflicts = await self.ledger.record_ids(request.intent, named)
            except LedgerError as exc:  # the jobs exist: watch them regardless
                logger.error(
                    "enqueue of %s: the ledger did not take ids %s: %s",
                    model,
                    named,
                    exc,
                )
                conflicts = []
            taken += [i for i in fresh if i in conflicts]
            fresh = [i for i in fresh if i not in conflicts]
        if fresh:
            self._claim(request.op, fresh)
        if not answer.problems and not taken:
            return fresh
        problems = [*answer.problems]
        if taken:
            problems.append(
                f"it named {', '.join(map(repr, taken))}, already held by another enqueue "
                "(not taken twice)"
            )
        summary = "; ".join(problems)
        logger.warning("enqueue of %s: a malformed answer (%s)", model, summary)
        # Jobs that may exist unnamed: those asked and not named, or, if more, one per entry
        # that names no id (each entry stands for a job the server says it made).
        missing = max(request.count - len(fresh) - len(answer.unwatchable), answer.unidentified)
        adopted: list[str] = []
        if missing > 0:
            try:
                rest = request
                if named:  # its intent is answered, and cannot be lost: one of their own
                    rest = await self._write_ahead(request.op, missing, request.sent)
                found = await self._reconcile(rest, cause=None, created=True)
            except (AmbiguousEnqueueError, LedgerError) as exc:  # the ledger names none
                candidates = exc.candidate_ids if isinstance(exc, AmbiguousEnqueueError) else ()
                raise AmbiguousEnqueueError(
                    f"enqueue of {model}: a malformed answer ({summary}); the jobs it named are "
                    f"watched ({', '.join(fresh) or 'none'}) and {missing} more could not be "
                    f"settled: {exc}",
                    model=model,
                    params=request.op.track.params,
                    candidate_ids=candidates,
                    generation_ids=[*fresh, *answer.unwatchable],
                ) from exc
            assert found is not None  # created=True: never "nothing was made"
            adopted = found
            self.reconciled += 1
            request.op.track.trace.reconciled(len(adopted))
            self._claim(request.op, adopted)
        ids = [*fresh, *adopted]
        if taken or answer.unwatchable or len(ids) > request.count:
            held = [*ids, *answer.unwatchable]
            raise APIResponseValidationError(
                f"POST /api/ai/queue: a malformed answer ({summary}); it was not sent again. "
                f"Jobs it holds: {', '.join(held) or 'none'} (those that can be watched are, "
                "in client.pending)",
                generation_ids=held,
            )
        if adopted:
            logger.warning("enqueue of %s: made good by adopting %s", model, adopted)
        return ids

    async def _reconcile(
        self, request: _Request, *, cause: OxenError | None, created: bool
    ) -> list[str] | None:
        """Settle a request without (a whole) answer within the retry policy's deadline: its
        jobs, or ``None`` if it made none (never when ``created``: a job certainly exists)."""
        intent = request.intent
        lost = "the answer was lost" if cause is None else f"the answer was lost ({cause})"
        try:
            await self.ledger.mark_lost(intent)
        except LedgerError as exc:
            raise request.ambiguous(
                f"{lost}, and the ledger could not start reconciling it ({exc}); it was not "
                "sent again"
            ) from exc
        deadline = self._retry.deadline
        try:
            with anyio.move_on_after(math.inf if deadline is None else deadline):
                found = await self.reconciler.settle(
                    intent,
                    model=request.op.track.model,
                    params=request.op.track.params,
                    count=request.count,
                    span=Span(request.sent, time.time()),
                    created=created,
                )
                if found is None:
                    await self._settled(intent, "resent")
                return found
            error = request.ambiguous(
                f"{lost} and the job could not be settled within the {deadline:g} s retry "
                "deadline; it was not sent again"
            )
        except AmbiguousEnqueueError as exc:
            error = exc
        except OxenError as exc:
            error = request.ambiguous(
                f"{lost} and the job could not be looked up ({exc}); it was not sent again"
            )
            error.__cause__ = exc
        await self._settled(intent, "ambiguous")
        raise error

    async def _settled(self, intent: str, how: Literal["refused", "resent", "ambiguous"]) -> None:
        try:
            await self.ledger.mark_settled(intent, how)
        except LedgerError as exc:
            logger.warning("the ledger could not settle request %s (%s): %s", intent, how, exc)
