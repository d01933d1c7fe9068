"""Enqueueing without ever creating a job twice, or losing one to a cancelled caller.

**Who runs it.** An enqueue is handed to the client: a small pool of worker tasks in the
client's own task group sends it, so the caller only awaits its outcome. A caller cancelled
while its request waits its turn withdraws it (nothing was sent). A caller cancelled while it
is in flight (``task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``, an anyio or trio
scope: none of them reaches the worker) abandons it: the worker still reads the answer, the
job is registered with the client, and a ``generate()`` that owned it has it cancelled
upstream.

**Written ahead.** Before each ``POST /api/ai/queue`` the request is recorded in the enqueue
ledger (`_ledger`: this process's memory by default, or SQLite or PostgreSQL shared by
every process on the key), and its ids are recorded when the answer arrives, so no billed job
is ever unknown to the ledger, whatever happens to the process.

**Never twice.** The API has no idempotency key, so the request is sent again only when the
server certainly did not process it (429, 503, a connection never established; see
``_retry``), or when a reconciliation proved it made nothing. When the answer is lost after
the request left (a read timeout, a connection cut mid-body, a 502 or 504 from a proxy, a
200 whose body is garbled), the job may exist and be billed: the request is *reconciled*
(`_reconcile`) against the server's rows and the ledger, never blindly resent. Its jobs
are adopted when they can be told apart; [`AmbiguousEnqueueError`][oxen_queue.AmbiguousEnqueueError]
(naming the candidates) is raised when they cannot, or when the look outlasts the retry policy's
deadline. The request is sent again only after two looks a moment apart that *could see*
and found nothing: no row of its model and parameters that nothing else holds, none whose
``enqueued_at`` or id cannot be believed, none within the reach of its window, and the
history read back to the start of that reach. How far a server time is believed, and how far
the reach extends, is ``_clock``'s: an absurd ``Date`` header or ``enqueued_at`` (null,
negative, before 2020, a float or a string, year 9999) is no evidence and makes the reach
endless, so such a server makes an enqueue ambiguous, never sent twice. An enqueue is sent at
most `_SENDS` times, each after the last was shown to have made nothing (a bound of its
own: the retry policy's attempts count refusals, within each send).

**Every job a 2xx answer names** is accounted for (owners: ``_api.parse_enqueue_answer``, and
`Enqueuer._answered` here). A successful answer proves the request was processed: it is
never sent again, whatever its shape. Each id it names that can be watched (a plausible id,
``_ids``) is taken by this request at once (before any await, so of two answers naming one id
the first takes it), recorded in the ledger (``record_ids``: never "refused"), watched by the
client, and found again by ``recover()``. Then, if the answer was not exactly as documented:

* ids another enqueue of this client holds (or a reattached or recovered generation, or a
  request of another client sharing the ledger) are not taken twice: the answer is wrong
  about them, and the error names them;
* ids that cannot be watched (``../x``, 300 characters) are recorded and named on the error,
  never put into a URL;
* jobs the answer does not name (fewer entries than asked, an entry without a string id, an
  id named twice, a colliding id; as many as were asked and not named, or as there are
  entries without an id if more) may exist: they are looked for as a lost answer's are, under
  an intent of their own, with "nothing was made" ruled out. Adopted, they join the others;
  not settled, the enqueue raises [`AmbiguousEnqueueError`][oxen_queue.AmbiguousEnqueueError] (its
  ``generation_ids`` the jobs it did make, its ``candidate_ids`` what may be the rest);
* more jobs than asked are all watched, and named on the error.

An answer made good entirely (the missing jobs adopted) returns its ids, with a warning in the
log; otherwise [`APIResponseValidationError`][oxen_queue.APIResponseValidationError] names, in
``generation_ids``, every job the request holds.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
from ._otel import NO_TRACE, RequestTrace
from ._reconcile import Reconciler
from ._retry import RetryPolicy, certainly_created, is_ambiguous, is_refused, retrying_call
from ._signal import Signal

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._api import EnqueueAnswer, QueueEndpoints
    from ._clock import ServerClock
    from ._ledger import Ledger

__all__ = ["Enqueuer"]

logger = logging.getLogger("oxen_queue")

_OWNED_LIMIT: Final = 200_000  # ids remembered as ours; old ones cannot match a new request
_SENDS: Final = 3
"""Sends of one enqueue at most, each after the one before was shown to have made nothing.
Its own bound: the retry policy's attempts count refusals, within each send."""

IdsCallback = Callable[[list[str]], object]
FailedCallback = Callable[[BaseException, bool], object]
"""Told once how an enqueue that created nothing ended, and whether it may have been sent."""


class _Op:
    """One enqueue handed to the workers, and its outcome."""

    __slots__ = ("abandoned", "api", "count", "done", "ids", "model", "on_abandoned",
                 "on_created", "on_failed", "outcome", "params", "state", "trace")  # fmt: skip

    def __init__(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        on_created: IdsCallback,
        on_abandoned: IdsCallback | None,
        on_failed: FailedCallback | None,
        api: QueueEndpoints | None,
        trace: RequestTrace,
    ) -> None:
        self.api = api
        self.trace = trace
        self.on_failed = on_failed
        self.model = model
        self.params = params
        self.count = count
        self.on_created = on_created
        self.on_abandoned = on_abandoned
        self.state: Literal["queued", "running", "withdrawn", "done"] = "queued"
        self.abandoned = False
        self.outcome: list[str] | OxenError | None = None
        self.ids: list[str] = []  # the jobs known to be this enqueue's so far
        self.done = Signal()

    def finish(self, outcome: list[str] | OxenError, *, sent: bool = True) -> None:
        self.outcome = outcome
        self.state = "done"
        self.done.set()
        if isinstance(outcome, OxenError) and self.on_failed is not None:
            self.on_failed(outcome, sent)


@dataclass(frozen=True, slots=True)
class _Request:
    """One sent request of an enqueue, as its reconciliation needs it."""

    model: str
    params: Mapping[str, Any]
    count: int
    intent: str
    sent: float
    trace: RequestTrace = NO_TRACE


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
        on_retry: Told of each refused attempt that is sent again, with its error (a counter).
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
        on_retry: Callable[[BaseException | None], None] | None = None,
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
        api: QueueEndpoints | None = None,
        trace: RequestTrace = NO_TRACE,
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
            api: The endpoints to send it through: a view's, with its timeouts; ``None``:
                the client's own.
            trace: The request's telemetry: its context is current while the worker sends
                it, and it is told of retries, a lost answer, a reconciliation, a resend.

        Raises:
            AmbiguousEnqueueError: The job's existence could not be settled (its
                ``generation_ids`` the jobs it certainly made, if any).
            APIResponseValidationError: A successful answer that could not be made good:
                its ``generation_ids`` are the jobs the request holds (watched when they can
                be). Never sent again.
            ClientClosedError: The client closed first.
            OxenError: The request was refused for good (400, 401, ...), or kept being
                refused (429, 503) past the retry policy.
        """
        if self._closed or self._task_group is None:
            error = ClientClosedError("the client is closed")
            if on_failed is not None:
                on_failed(error, False)  # nothing was sent: whatever was reserved goes back
            raise error
        op = _Op(model, params, count, on_created, on_abandoned, on_failed, api, trace)
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
            op.ids.extend(ids)
            op.on_created(ids)
            if op.abandoned and op.on_abandoned is not None:
                op.on_abandoned(ids)

        token = op.trace.attach()  # the caller's context (and span), not this worker's
        try:
            ids = await self._create(
                op.model, op.params, op.count, claim, op.api or self._api, op.trace
            )
        except OxenError as exc:
            op.finish(exc)
        except Exception as exc:
            logger.error("oxen_queue: enqueue of %s failed unexpectedly", op.model, exc_info=exc)
            error = OxenError(f"enqueue of {op.model} failed unexpectedly: {exc!r}")
            error.__cause__ = exc
            op.finish(error)
        except BaseException:  # the client's task group is being cancelled: it is closing
            made = f"; its jobs {', '.join(op.ids)} exist" if op.ids else ""
            op.finish(
                ClientClosedError(
                    f"the client closed while an enqueue of {op.model} was in flight{made}; "
                    "others may exist (look in client.list_generations())",
                    generation_ids=op.ids,
                )
            )
            raise
        else:
            op.finish(ids)
        finally:
            op.trace.detach(token)

    # -- sending and reconciling --------------------------------------------------------

    async def _create(
        self,
        model: str,
        params: Mapping[str, Any],
        count: int,
        claim: IdsCallback,
        api: QueueEndpoints,
        trace: RequestTrace,
    ) -> list[str]:
        body: dict[str, Any] = {"model": model, **params}
        if count != 1:
            body["num_generations"] = count
        ledger = self.ledger
        last: list[tuple[str, float]] = []  # the latest attempt's intent and send time

        async def write_ahead() -> None:
            # Once the request has its slot (the pacer may have held it): its true send time.
            sent = time.time()
            intent = await ledger.record_intent(
                model=model,
                params=params,
                count=count,
                deadline=sent + self._in_flight_for,
                sent_at=sent,
                sent_at_server=self._clock.server_time(sent),
            )
            last[:] = [(intent, sent)]

        async def attempt() -> tuple[EnqueueAnswer, float]:
            last.clear()
            try:
                answer = await api.enqueue(body, count, on_admitted=write_ahead)
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
            return answer, time.time()

        def retried(error: BaseException | None, delay: float) -> None:
            if self._on_retry is not None:
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
                ((intent, sent),) = last
                request = _Request(model, params, count, intent, sent, trace)
                return await self._answered(request, answer, received, claim)
            ((intent, sent),) = last
            logger.debug("enqueue of %s: answer lost (%s); reconciling", model, cause)
            trace.answer_lost(cause)
            found = await self._reconcile(
                _Request(model, params, count, intent, sent, trace),
                cause=cause,
                created=certainly_created(cause),
            )
            if found is not None:
                self.reconciled += 1
                trace.reconciled(len(found))
                claim(found)
                return found
            self.resent += 1
            trace.resent()
            logger.debug("enqueue of %s: no job was created; sending it again", model)
        raise AmbiguousEnqueueError(
            f"enqueue of {model} kept losing its answer; gave up after {_SENDS} sends, "
            "each shown never to have created a job",
            model=model,
            params=params,
        )

    def _take(self, ids: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Split an answer's ids into those now this request's and those another enqueue of
        this client already holds (or a generation reattached or recovered: it is not this
        request's job, whatever the answer says). No await: of two answers naming one id,
        the first takes it.

        The one place an enqueue's ids become the client's: ``ClientCore.track`` hands out
        the existing handle of an id it already watches, so two enqueues would share it if
        this let the id through twice.
        """
        fresh: list[str] = []
        taken: list[str] = []
        for generation_id in ids:
            if self.owns(generation_id):
                taken.append(generation_id)
            else:
                self.own(generation_id)
                fresh.append(generation_id)
        return fresh, taken

    async def _answered(
        self, request: _Request, answer: EnqueueAnswer, received: float, claim: IdsCallback
    ) -> list[str]:
        """Account for every job a successful answer names; its ids (see the module,
        "Every job a 2xx answer names")."""
        fresh, taken = self._take(answer.ids)
        named = [*fresh, *answer.unwatchable]
        self.reconciler.note_sent(fresh, sent=request.sent, received=received)
        if named:
            try:
                conflicts = await self.ledger.record_ids(request.intent, named)
            except LedgerError as exc:  # the jobs exist: watch them regardless
                logger.error(
                    "enqueue of %s: the ledger did not take ids %s: %s", request.model, named, exc
                )
                conflicts = []
            if conflicts:  # recorded by another client's request (a shared ledger)
                held_elsewhere = set(conflicts)
                taken += [i for i in fresh if i in held_elsewhere]
                fresh = [i for i in fresh if i not in held_elsewhere]
        if fresh:
            claim(fresh)
        if not answer.problems and not taken:
            return fresh
        return await self._make_good(request, answer, fresh, taken, claim, recorded=bool(named))

    async def _make_good(
        self,
        request: _Request,
        answer: EnqueueAnswer,
        fresh: list[str],
        taken: list[str],
        claim: IdsCallback,
        *,
        recorded: bool,
    ) -> list[str]:
        """A malformed (or colliding) successful answer: its named jobs are watched already;
        look for the ones it did not name, then say what could not be made good.

        ``recorded``: the answer's intent holds ids in the ledger (it is ``answered``).
        """
        model, count = request.model, request.count
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
        missing = max(count - len(fresh) - len(answer.unwatchable), answer.unidentified)
        adopted: list[str] = []
        if missing > 0:
            # The request was processed (a 2xx answer): it is never sent again. The jobs the
            # answer did not name are looked for as a lost answer's are, under an intent of
            # their own when the answer's holds ids (it is answered, and cannot be lost).
            try:
                rest = await self._remainder(request, missing) if recorded else request
                found = await self._reconcile(rest, cause=None, created=True)
            except AmbiguousEnqueueError as exc:
                raise AmbiguousEnqueueError(
                    f"enqueue of {model}: a malformed answer ({summary}); the jobs it named "
                    f"are watched ({', '.join(fresh) or 'none'}) and {missing} more could not "
                    f"be settled: {exc}",
                    model=model,
                    params=request.params,
                    candidate_ids=exc.candidate_ids,
                    generation_ids=[*fresh, *answer.unwatchable],
                ) from exc
            assert found is not None  # created=True: never "nothing was made"
            self.reconciled += 1
            request.trace.reconciled(len(found))
            adopted = found
            claim(adopted)
        ids = [*fresh, *adopted]
        if taken or answer.unwatchable or len(ids) > count:
            raise APIResponseValidationError(
                f"POST /api/ai/queue: a malformed answer ({summary}); it was not sent again. "
                f"Jobs it holds: {', '.join([*ids, *answer.unwatchable]) or 'none'} (those that "
                "can be watched are, in client.pending)",
                generation_ids=[*ids, *answer.unwatchable],
            )
        if adopted:
            logger.warning("enqueue of %s: made good by adopting %s", model, adopted)
        return ids

    async def _remainder(self, request: _Request, missing: int) -> _Request:
        """An intent for the jobs a successful answer did not name, sent when it was.

        Raises:
            AmbiguousEnqueueError: The ledger could not record it (nothing can be claimed).
        """
        try:
            intent = await self.ledger.record_intent(
                model=request.model,
                params=request.params,
                count=missing,
                deadline=request.sent + self._in_flight_for,
                sent_at=request.sent,
                sent_at_server=self._clock.server_time(request.sent),
            )
        except LedgerError as exc:
            raise AmbiguousEnqueueError(
                f"enqueue of {request.model}: the ledger could not record the jobs to look for "
                f"({exc})",
                model=request.model,
                params=request.params,
            ) from exc
        return _Request(request.model, request.params, missing, intent, request.sent, request.trace)

    async def _reconcile(
        self, request: _Request, *, cause: OxenError | None, created: bool
    ) -> list[str] | None:
        """Settle one request without (a whole) answer within the retry policy's deadline
        (see ``_reconcile``); ``created``: a job certainly exists, so never ``None``."""
        model, params, intent = request.model, request.params, request.intent
        lost = "the answer was lost" if cause is None else f"the answer was lost ({cause})"
        try:
            await self.ledger.mark_lost(intent)
        except LedgerError as exc:
            raise AmbiguousEnqueueError(
                f"enqueue of {model}: {lost}, and the ledger could not start reconciling it "
                f"({exc}); it was not sent again",
                model=model,
                params=params,
            ) from exc
        span = Span(request.sent, time.time())
        deadline = self._retry.deadline
        try:
            with anyio.move_on_after(math.inf if deadline is None else deadline):
                found = await self.reconciler.settle(
                    intent,
                    model=model,
                    params=params,
                    count=request.count,
                    span=span,
                    created=created,
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
                f"enqueue of {model}: {lost} and the job could not be looked up ({exc}); "
                "it was not sent again",
                model=model,
                params=params,
            ) from exc
        await self._settled(intent, "ambiguous")
        raise AmbiguousEnqueueError(
            f"enqueue of {model}: {lost} and the job could not be settled within the "
            f"{deadline:g} s retry deadline; it was not sent again",
            model=model,
            params=params,
        )

    async def _settled(self, intent: str, how: Literal["refused", "resent", "ambiguous"]) -> None:
        try:
            await self.ledger.mark_settled(intent, how)
        except LedgerError as exc:
            logger.warning("the ledger could not settle request %s (%s): %s", intent, how, exc)
