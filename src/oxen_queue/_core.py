"""What an ``AsyncClient`` and its ``with_options`` views share: the connections, the watcher,
the generations being watched, and the lifecycle. Opening or closing any view opens or closes
them all. The core owns every `Generation` it tracks: their ``cancel()``, ``refresh()`` and
``download()`` come here, and a done callback forgets each and tells the watcher and the ledger.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
import math
import os
from collections import deque
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import httpx

from ._api import QUEUE, QueueEndpoints
from ._budget import Budget
from ._detached import spawn_detached
from ._download import FileFetcher
from ._durations import optional_seconds, seconds, timeout_of
from ._enqueue import Enqueuer
from ._exceptions import APIResponseValidationError, ClientClosedError, InvalidParamsError
from ._generation import Generation, due, expire_if_due, fail, observe
from ._http import (
    DEFAULT_BASE_URL,
    USER_AGENT,
    ApiSession,
    attempt_deadline,
    check_api_key,
    check_base_url,
)
from ._ids import MAX_ID_LENGTH, plausible_id
from ._ledger import Ledger, LedgerError, open_ledger
from ._ledger._memory import MemoryLedger
from ._models import TERMINAL_STATUSES
from ._money import AmountError, amount
from ._otel import client_telemetry
from ._params import ParamChecker
from ._poll import PollPolicy
from ._retry import RetryPolicy
from ._rows import Rows
from ._spend import SpendControl
from ._stats import ClientStats
from ._transport import HttpBackend
from ._types import DEFAULT, Default
from ._watch import CompletionMode, make_watcher
from ._watch._base import SharedPollWatcher, supervised
from ._watch._events import EventWatcher

if TYPE_CHECKING:
    from collections.abc import Mapping
    from decimal import Decimal
    from pathlib import Path

    from anyio.abc import TaskGroup

    from ._models import GenerationRecord

logger = logging.getLogger("oxen_queue")

CLOSE_GRACE: Final = 5.0
"""Seconds ``aclose()`` gives requests in flight (enqueues, upstream cancels) to land."""

_NOT_OPEN: Final = (
    "the client is not open yet, and this call cannot open it (it is not async): make an "
    "awaited call first (any one: `await client.get_generation(id)`), or open it with "
    "`async with AsyncClient() as client:`"
)
_CLOSED: Final = (
    "the client is closed (by aclose(), the end of its `async with` block, or the end of "
    "the event loop it ran on); make a new one"
)


@dataclasses.dataclass(frozen=True, slots=True)
class CallOptions:
    """The defaults of the calls made through a client or one of its ``with_options`` views:
    ``timeout`` (``None``: the client's), ``validate`` and generations' ``deadline`` (seconds;
    ``None``: no limit)."""

    timeout: httpx.Timeout | None
    validate: bool
    deadline: float | None

    def validating(self, validate: bool | None) -> bool:
        """A call's ``validate``, or these defaults' when it gives ``None``."""
        return self.validate if validate is None else validate

    def deadline_or(self, deadline: float | Default | None) -> float | None:
        """A call's ``deadline`` (checked by `optional_seconds`), or the default's for
        ``DEFAULT``."""
        return (
            self.deadline if deadline is DEFAULT else optional_seconds(deadline, field="deadline")
        )

    def replace(
        self,
        *,
        timeout: float | httpx.Timeout | Default,
        validate: bool | Default,
        deadline: float | Default | None,
    ) -> CallOptions:
        """These defaults with the ones given (``DEFAULT`` keeps one)."""
        return CallOptions(
            timeout=self.timeout if timeout is DEFAULT else timeout_of(timeout),
            validate=self.validate if validate is DEFAULT else validate,
            deadline=self.deadline_or(deadline),
        )


class ClientCore:
    """The shared state of a client, made from ``AsyncClient``'s arguments; an unusable one
    raises ``InvalidParamsError``."""

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        completion: CompletionMode,
        poll_policy: PollPolicy | None,
        shared_poll_interval: float,
        backstop_interval: float,
        retry: RetryPolicy | None,
        timeout: float | httpx.Timeout,
        stall_timeout: float,
        max_concurrency: int | None,
        max_downloads: int,
        ledger: str | None,
        validate: bool,
        max_download_bytes: int | None,
        allow_insecure_http: bool,
        verify: bool,
        transport: httpx.AsyncBaseTransport | None,
        http_backend: HttpBackend,
        max_spend: Decimal | int | None,
    ) -> None:
        key = check_api_key(api_key)
        url = check_base_url(
            base_url or os.environ.get("OXEN_BASE_URL") or DEFAULT_BASE_URL,
            allow_insecure_http=allow_insecure_http,
        )
        shared_poll_interval = seconds(shared_poll_interval, field="shared_poll_interval")
        backstop_interval = seconds(backstop_interval, field="backstop_interval")
        stall_timeout = seconds(stall_timeout, field="stall_timeout")
        try:
            budget = None if max_spend is None else Budget(amount(max_spend))
        except AmountError as exc:
            raise InvalidParamsError(
                f"max_spend must be an amount from 0 to 10**12 with at most 18 decimal places "
                f"(a Decimal or an int): {exc}",
                field="max_spend",
            ) from None
        retry = retry or RetryPolicy()
        poll_policy = poll_policy or PollPolicy()
        http_timeout = timeout_of(timeout)
        ledger_url = ledger if ledger is not None else os.environ.get("OXEN_LEDGER") or None
        try:
            enqueue_ledger: Ledger = open_ledger(ledger_url) or MemoryLedger()
        except ValueError as exc:
            raise InvalidParamsError(str(exc), field="ledger") from None
        self.completion: CompletionMode = completion
        # OpenTelemetry (the otel extra): a no-op without it; imported at the first call.
        self.telemetry = telemetry = client_telemetry(base_url=url, secret=key)
        self.session = session = ApiSession(
            base_url=url,
            api_key=key,
            timeout=http_timeout,
            max_concurrency=max_concurrency,
            retry=retry,
            transport=transport,
            http_backend=http_backend,
            verify=verify,
            telemetry=telemetry,
        )
        self.api = api = QueueEndpoints(session)
        self.files = FileFetcher(
            auth=session.auth,
            connect_timeout=http_timeout.connect,
            stall_timeout=stall_timeout,
            max_downloads=max_downloads,
            max_bytes=max_download_bytes,
            transport=transport,
            http_backend=http_backend,
            verify=verify,
            headers={"User-Agent": USER_AGENT},
        )
        admission = session.admission
        self.enqueuer = Enqueuer(
            api,
            ledger=enqueue_ledger,
            clock=session.clock,
            retry=retry,
            attempt_deadline=attempt_deadline(http_timeout),
            workers=lambda: admission.bound,
            on_retry=functools.partial(session.note_retry, "POST", QUEUE),
        )
        self.params = ParamChecker(api.get_model, enabled=True)
        self.watcher = make_watcher(
            completion,
            api,
            poll_policy,
            shared_poll_interval=shared_poll_interval,
            backstop_interval=backstop_interval,
            stall_timeout=stall_timeout,
        )
        self.spend = SpendControl(
            params=self.params,
            endpoints=api,
            task_group=self.require_open,
            budget=budget,
            telemetry=telemetry,
        )
        self.defaults = CallOptions(timeout=None, validate=validate, deadline=poll_policy.deadline)
        self.rows = Rows(self, api, self.defaults)  # what generations delegate to
        self.pending: dict[str, Generation] = {}
        # One bound method for every generation's done callback, not one each.
        self._on_done = self._finished
        self.deadlines = _Deadlines(self.pending)
        telemetry.watch(
            pending=self.pending, admission=admission, will_settle=self.spend.will_settle
        )
        self.closed = False
        self._stack: AsyncExitStack | None = None  # the outer group of an `async with`
        self._opening: anyio.Event | None = None  # set once an open is over (or failed)
        self._host_handle: object = None  # a detached host's task (asyncio holds it weakly)
        self._task_group: TaskGroup | None = None  # the background work's, in a host task
        self._background = 0  # upstream cancels of abandoned jobs still running
        self._idle: anyio.Event | None = None  # set when _background drops to 0 on close
        self._stopped: anyio.Event | None = None  # the background work has unwound
        # A memory ledger needs no outcomes: it is this client's own watching.
        self._outcomes = (
            None if isinstance(enqueue_ledger, MemoryLedger) else _OutcomeWriter(enqueue_ledger)
        )

    @property
    def state(self) -> str:
        return "closed" if self.closed else "open" if self._task_group else "not opened"

    # -- lifecycle ----------------------------------------------------------------------
    #
    # Two ways to open, one background task group. ``async with`` (``open``/``exit``) hosts
    # it in a task of an outer task group the block holds: structured, and stopping it never
    # cancels the block. A client used without it opens on its first awaited call
    # (``opened``), and hosts it in a task the event loop owns (detached). Either way no
    # cancellation of a caller reaches it, and ``close()`` ends it.

    async def open(self) -> None:
        """Start the background work, from ``__aenter__`` (`exit` matches it); only once,
        before any call."""
        if self.closed or self._stack is not None or self._opening is not None:
            raise ClientClosedError(
                "an AsyncClient can be opened only once, and `async with` must come before "
                "its first call; make a new one"
            )
        await self._open(detached=False)

    async def opened(self) -> TaskGroup:
        """The background task group, the client opened first if it never was (by every
        awaited entry point). The open is shielded, so a caller cancelled meanwhile cannot
        leave it half done; others wait for it; one that fails (``LedgerError``) raises in
        its caller, and the next call tries again. ``ClientClosedError`` once closed."""
        while True:
            if self.closed:
                raise ClientClosedError(_CLOSED)
            if self._task_group is not None:
                return self._task_group
            opening = self._opening
            if opening is None:
                with anyio.CancelScope(shield=True):
                    await self._open(detached=True)
                continue
            await opening.wait()  # another caller's open, or an `async with`'s
            if self._task_group is None and self._opening is opening and not self.closed:
                raise ClientClosedError("the client's background work could not be started")

    async def _open(self, *, detached: bool) -> None:
        """The transport, the ledger, then the host of the background work (see above)."""
        self._opening = opening = anyio.Event()
        try:
            self.session.open()  # before the ledger: it may refuse, and leave nothing open
            await self.enqueuer.ledger.open()
            # Events need a running loop: made here, not with the client.
            started, self._stopped = anyio.Event(), anyio.Event()
            host = functools.partial(self._host, started, self._stopped, detached=detached)
            if detached:
                self._host_handle = spawn_detached(host, name="oxen-queue client")
                await started.wait()
            else:
                # Kept open on success (pop_all); left at once if the host fails to start, so
                # the caller's cancel scopes are as they were.
                async with AsyncExitStack() as stack:
                    outer = await stack.enter_async_context(anyio.create_task_group())
                    await outer.start(host)
                    self._stack = stack.pop_all()
        except BaseException:
            self._opening = None  # nothing was opened: the next call or `async with` may retry
            raise
        finally:
            opening.set()

    async def _host(
        self,
        started: anyio.Event,
        stopped: anyio.Event,
        *,
        detached: bool,
        task_status: anyio.abc.TaskStatus[TaskGroup] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The host of the background work, ended by ``close()`` (or, detached, by the end of
        the event loop). A detached host lets nothing but cancellation escape (see
        `spawn_detached`); an ``async with``'s raises into the block, as structured work does."""
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                self.watcher.start(task_group)
                self.enqueuer.start(task_group)
                task_group.start_soon(supervised("deadlines", self.deadlines.run, restart=True))
                if self._outcomes is not None:  # a ledger of the user's own may raise anything
                    run = supervised("ledger outcomes", self._outcomes.run, restart=True)
                    task_group.start_soon(run)
                task_status.started(task_group)
                started.set()
                await anyio.sleep_forever()  # until close() cancels the group
        except Exception as exc:  # pragma: no cover - every background task is supervised
            if not detached:
                raise
            logger.error("oxen_queue: the client's background work failed", exc_info=exc)
        finally:
            started.set()  # for an open waiting on a host that failed to start
            stopped.set()
            if detached and not self.closed:
                # Detached, and the event loop is ending (asyncio.run's or trio.run's main
                # coroutine returned with the client open): let go of the connections while
                # it still runs, so that nothing is left to warn about; raise nothing.
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                    self.closed = True
                    self._fail_pending("the event loop the client ran on ended")
                    self.telemetry.close()
                    await self._close_pools(quiet=True)

    async def _close_pools(self, *, quiet: bool) -> None:
        for close in (self.session.http.aclose, self.files.aclose, self.enqueuer.ledger.aclose):
            try:
                await close()
            except Exception as exc:
                if not quiet:
                    raise
                logger.debug("closing an abandoned client: %s", exc)

    def _fail_pending(self, why: str) -> None:
        for g in list(self.pending.values()):
            message = (
                f"{why} before generation {g.id} finished; reattach with client.generation(id)"
            )
            fail(g, ClientClosedError(message, generation_ids=[g.id]))

    async def exit(self) -> None:
        """Close, then leave the outer task group (from ``__aexit__`` only), even when
        closing failed (a full disk under the ledger): a group left open would leave its
        cancel scope on the caller's task."""
        try:
            await self.close()
        finally:
            stack, self._stack = self._stack, None
            if stack is not None:
                await stack.aclose()

    async def close(self) -> None:
        """Withdraw what was not sent, let what is in flight land, fail what is pending,
        stop the background work and close the connections. Callable from anywhere."""
        if self.closed:
            return
        if self._opening is not None and not self._opening.is_set():
            with anyio.CancelScope(shield=True):
                await self._opening.wait()  # an open under way: closed once it is done
            await self.close()  # (unless another close came first meanwhile)
            return
        self.closed = True
        if self._task_group is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                await self.enqueuer.close(CLOSE_GRACE)
                if self._background:
                    self._idle = anyio.Event()
                    await self._idle.wait()
                if self._outcomes is not None:
                    await self._outcomes.drain()
        self._fail_pending("the client closed")
        with anyio.CancelScope(shield=True):
            if self._task_group is not None and self._stopped is not None:
                # Every task unwinds (the event stream closes its response) before the pools
                # close under it.
                self._task_group.cancel_scope.cancel()
                with anyio.move_on_after(CLOSE_GRACE):
                    await self._stopped.wait()
            await self._close_pools(quiet=False)
        self.telemetry.close()

    def check_not_closed(self) -> None:
        """Raise ``ClientClosedError`` if closed: for what opens the client later."""
        if self.closed:
            raise ClientClosedError(_CLOSED)

    def require_open(self) -> TaskGroup:
        """The background task group, for what cannot open the client (not async); else
        ``ClientClosedError``."""
        if self._task_group is None or self.closed:
            raise ClientClosedError(_CLOSED if self.closed else _NOT_OPEN)
        return self._task_group

    # -- generations --------------------------------------------------------------------

    def track(
        self,
        generation_id: str,
        *,
        model: str | None,
        params: Mapping[str, Any],
        deadline: float | None,
        fresh: bool,
    ) -> Generation:
        """The handle of a generation, made and watched if it is not watched already.

        The one door to watching: an implausible id (`_ids`; only the server or the ledger
        can give one) gets a handle failed with ``APIResponseValidationError``, never watched.
        """
        if (existing := self.pending.get(generation_id)) is not None:
            return existing
        status = "queued" if fresh else "unknown"
        generation = Generation(
            generation_id, owner=self, model=model, params=params, deadline=deadline, status=status
        )
        if not plausible_id(generation_id):
            shown = repr(generation_id)[:80]
            logger.warning("server's generation id %s cannot be watched: not a plausible id", shown)
            error = APIResponseValidationError(
                f"the server gave the generation id {shown}, which cannot be watched: an id is 1 "
                f"to {MAX_ID_LENGTH} letters, digits and - _ . ~, not dots alone. Its job may "
                "exist: look for it with client.list_generations()"
            )
            fail(generation, error)
            return generation
        self.pending[generation_id] = generation
        if deadline is not None:
            self.deadlines.add(due(generation), generation_id)
        generation.add_done_callback(self._on_done)
        self.watcher.track(generation, fresh=fresh)
        return generation

    def _finished(self, generation: Generation) -> None:
        """A tracked generation is done: forget it, and tell the watcher and the ledger."""
        self.pending.pop(generation.id, None)  # (only a tracked generation calls this)
        self.watcher.forget(generation)
        if self._outcomes is not None:
            self._outcomes.note(generation)

    # -- what a generation delegates to (GenerationOwner) --------------------------------

    async def cancel(self, generation: Generation | str) -> None:
        await self.rows.cancel(generation)

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        return await self.rows.get_generation(generation_id)

    async def download(
        self, source: Generation | GenerationRecord, path: str | os.PathLike[str] | None = None
    ) -> Path:
        return await self.files.save(await self.rows.finished(source), path)

    def cancel_upstream(self, generation_ids: list[str]) -> anyio.Event | None:
        """Cancel abandoned jobs on the server, from the client's own tasks (best effort),
        which no cancellation of the caller reaches.

        Returns:
            An event set once done, or ``None`` when there was nothing to do.
        """
        # An implausible id can come only from the server: it must never become a DELETE.
        if skipped := [i for i in generation_ids if not plausible_id(i)]:
            logger.debug(
                "not cancelling abandoned generations with implausible ids: %s",
                ", ".join(repr(i)[:80] for i in skipped),
            )
            generation_ids = [i for i in generation_ids if plausible_id(i)]
        if not generation_ids or self._task_group is None:
            return None
        done = anyio.Event()
        self._background += 1
        self._task_group.start_soon(self._cancel_quietly, generation_ids, done)
        return done

    async def _cancel_quietly(self, generation_ids: list[str], done: anyio.Event) -> None:
        try:
            with anyio.move_on_after(10.0):
                for generation_id in generation_ids:
                    try:
                        await self.api.cancel(generation_id)
                        # No event announces a cancellation: the row settles the handle.
                        record = await self.api.get_generation(generation_id)
                    except Exception as exc:
                        logger.info(
                            "could not cancel abandoned generation %s: %s", generation_id, exc
                        )
                        continue
                    logger.debug("cancelled abandoned generation %s", generation_id)
                    if (pending := self.pending.get(generation_id)) is not None:
                        observe(pending, record)
        finally:
            done.set()
            self._background -= 1
            if not self._background and self._idle is not None:
                self._idle.set()

    def stats(self) -> ClientStats:
        stream = self.watcher if isinstance(self.watcher, EventWatcher) else None
        poller = stream.poller if stream is not None else self.watcher
        admission = self.session.admission
        return ClientStats(
            pending=len(self.pending),
            enqueued=self.enqueuer.created,
            reconciled=self.enqueuer.reconciled,
            resent=self.enqueuer.resent,
            requests=self.session.requests,
            retries=self.session.retries,
            stream_opens=stream.connects if stream is not None else 0,
            stream_stalls=stream.stalls if stream is not None else 0,
            polls=poller.ticks if isinstance(poller, SharedPollWatcher) else 0,
            enqueue_rate=admission.enqueue_rate.rate,
            max_concurrency=admission.bound,
        )


class _Deadlines:
    """Ends every pending generation at its deadline: one task and one heap for them all, so
    a generation needs no timer of its own.

    An entry is the due time and the id (looked up in ``pending`` when due, so a finished
    generation is not kept alive); stale entries go when due, or all at once when they come
    to outnumber the pending generations.
    """

    def __init__(self, pending: dict[str, Generation]) -> None:
        self._pending = pending
        self._heap: list[tuple[float, str]] = []
        self._wake: anyio.Event | None = None

    def add(self, due: float, generation_id: str) -> None:
        heap = self._heap
        if len(heap) > 2 * len(self._pending) + 1024:
            heap[:] = [entry for entry in heap if entry[1] in self._pending]
            heapq.heapify(heap)
        earliest = heap[0][0] if heap else math.inf
        heapq.heappush(heap, (due, generation_id))
        if due < earliest and self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = anyio.current_time()
            while heap and heap[0][0] <= now:
                _, generation_id = heapq.heappop(heap)
                if (generation := self._pending.get(generation_id)) is not None:
                    expire_if_due(generation)  # not due if the id was reattached since
            self._wake = anyio.Event()
            with anyio.move_on_after(heap[0][0] - now if heap else math.inf):
                await self._wake.wait()


class _OutcomeWriter:
    """Records each generation's final status in a shared ledger: ``note`` is a done callback,
    and `run` writes in turn from one background task, so watchers never wait on the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._queue: deque[tuple[str, str]] = deque()
        # Events need a running event loop: made on first use, not with the client.
        self._wake: anyio.Event | None = None
        self._idle: anyio.Event | None = None

    def note(self, generation: Generation) -> None:
        # Only the server's verdict: a deadline or a closed client leaves the job running.
        if generation.status in TERMINAL_STATUSES:
            self._queue.append((generation.id, generation.status))
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()
            if self._wake is not None:
                self._wake.set()

    async def run(self) -> None:
        while True:
            while self._queue:
                generation_id, status = self._queue.popleft()
                try:
                    await self._ledger.record_outcome(generation_id, status)
                except LedgerError as exc:
                    logger.warning("the ledger did not take %s's outcome: %s", generation_id, exc)
            if self._idle is not None:
                self._idle.set()
            self._wake = anyio.Event()
            await self._wake.wait()

    async def drain(self) -> None:
        """Wait until every noted outcome is written."""
        if self._idle is not None:
            await self._idle.wait()
