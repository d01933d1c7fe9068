"""What an ``AsyncClient`` and its option views share: the connections, the watcher, the
generations being watched, and the lifecycle that holds them together.

``client.with_options(...)`` returns another ``AsyncClient`` over the same :class:`ClientCore`,
so a view costs nothing, and opening or closing any of them opens or closes them all.
"""

from __future__ import annotations

import heapq
import logging
import math
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc

from ._exceptions import ClientClosedError
from ._generation import Generation, expire_if_due, fail, observe, watch_deadline
from ._ledger import LedgerError
from ._ledger._memory import MemoryLedger
from ._models import TERMINAL_STATUSES
from ._stats import ClientStats
from ._watch._base import supervised
from ._watch._events import EventWatcher
from ._watch._shared import SharedPollWatcher

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anyio.abc import TaskGroup

    from ._api import QueueEndpoints
    from ._download import FileFetcher
    from ._enqueue import Enqueuer
    from ._generation import GenerationOwner
    from ._http import ApiSession
    from ._ledger import Ledger
    from ._params import ParamChecker
    from ._poll import PollPolicy
    from ._watch import CompletionMode
    from ._watch._base import Watcher

__all__ = ["CLOSE_GRACE", "ClientCore"]

logger = logging.getLogger("oxen_queue")

CLOSE_GRACE: Final = 5.0
"""Seconds ``aclose()`` gives requests in flight (enqueues, upstream cancels) to land."""

_NOT_OPEN: Final = "the client is not open: use it inside `async with AsyncClient() as client:`"


class ClientCore:
    """The shared state of a client: session, watcher, enqueuer, pending generations, tasks."""

    def __init__(
        self,
        *,
        session: ApiSession,
        files: FileFetcher,
        endpoints: QueueEndpoints,
        enqueuer: Enqueuer,
        params: ParamChecker,
        watcher: Watcher,
        poll_policy: PollPolicy,
        completion: CompletionMode,
    ) -> None:
        self.session = session
        self.files = files
        self.endpoints = endpoints
        self.enqueuer = enqueuer
        self.params = params
        self.watcher = watcher
        self.poll_policy = poll_policy
        self.completion: CompletionMode = completion
        self.pending: dict[str, Generation] = {}
        self.deadlines = _Deadlines(self.pending)
        self.closed = False
        self._stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None  # the background work's, in a host task
        self._background = 0  # upstream cancels of abandoned jobs still running
        self._idle: anyio.Event | None = None
        self._stopped: anyio.Event | None = None  # set when the background work has unwound
        ledger = enqueuer.ledger
        # This process's memory needs no outcomes: it is this client's own watching.
        self._outcomes = None if isinstance(ledger, MemoryLedger) else _OutcomeWriter(ledger)

    @property
    def state(self) -> str:
        return "closed" if self.closed else "open" if self._task_group else "not opened"

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Start the background work: call from ``__aenter__``, with :meth:`exit` to match.

        The work runs in a task group of its own, hosted by one task of the outer group the
        caller's ``async with`` holds. So stopping it (``aclose()``, from anywhere) never
        cancels the caller's block, and only the caller's exit leaves the outer group.
        """
        if self.closed or self._stack is not None:
            raise ClientClosedError("an AsyncClient can be opened only once; make a new one")
        self.session.open()  # before the ledger: it may refuse, and leave nothing open
        await self.enqueuer.ledger.open()
        self._stopped = anyio.Event()
        stack = AsyncExitStack()
        outer = await stack.enter_async_context(anyio.create_task_group())
        self._task_group = await outer.start(self._host)
        self._stack = stack
        self.watcher.start(self._task_group)
        self.enqueuer.start(self._task_group)
        self._task_group.start_soon(supervised("deadlines", self.deadlines.run, restart=True))
        if self._outcomes is not None:
            # Supervised as the other loops are: a ledger of the user's own that raises
            # something unexpected must not take the client's task group down.
            self._task_group.start_soon(
                supervised("ledger outcomes", self._outcomes.run, restart=True)
            )

    async def _host(self, *, task_status: anyio.abc.TaskStatus[TaskGroup]) -> None:
        try:
            async with anyio.create_task_group() as task_group:
                task_status.started(task_group)
                await anyio.sleep_forever()  # until close() cancels the group
        finally:
            assert self._stopped is not None
            self._stopped.set()

    async def exit(self) -> None:
        """Close, then leave the outer task group (from ``__aexit__`` only)."""
        await self.close()
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def close(self) -> None:
        """Withdraw what was not sent, let what is in flight land, fail what is pending,
        stop the background work and close the connections. Callable from anywhere."""
        if self.closed:
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
        for generation in list(self.pending.values()):
            fail(
                generation,
                ClientClosedError(
                    f"the client closed before generation {generation.id} finished; "
                    "reattach with client.generation(id)",
                    generation_ids=[generation.id],
                ),
            )
        with anyio.CancelScope(shield=True):
            if self._task_group is not None and self._stopped is not None:
                # Every task unwinds (the event stream closes its response) before the pools
                # close under it.
                self._task_group.cancel_scope.cancel()
                with anyio.move_on_after(CLOSE_GRACE):
                    await self._stopped.wait()
            await self.session.http.aclose()
            await self.files.http.aclose()
            await self.enqueuer.ledger.aclose()

    def require_open(self) -> TaskGroup:
        if self._task_group is None or self.closed:
            raise ClientClosedError(_NOT_OPEN)
        return self._task_group

    # -- generations --------------------------------------------------------------------

    def track(
        self,
        owner: GenerationOwner,
        generation_id: str,
        *,
        model: str | None,
        params: Mapping[str, Any],
        deadline: float | None,
        fresh: bool,
    ) -> Generation:
        """The handle of a generation, made and watched if it is not watched already."""
        existing = self.pending.get(generation_id)
        if existing is not None:
            return existing
        generation = Generation(
            generation_id,
            owner=owner,
            model=model,
            params=params,
            deadline=deadline,
            status="queued" if fresh else "unknown",
        )
        self.pending[generation_id] = generation
        due = watch_deadline(generation)
        if due is not None:
            self.deadlines.add(due, generation_id)
        self.watcher.track(generation, fresh=fresh)
        if self._outcomes is not None:
            generation.add_done_callback(self._outcomes.note)
        return generation

    def forget(self, generation: Generation) -> None:
        if self.pending.get(generation.id) is generation:
            del self.pending[generation.id]

    def cancel_upstream(self, generation_ids: list[str]) -> anyio.Event | None:
        """Cancel abandoned jobs on the server, from the client's own tasks (best effort).

        No cancellation of the caller reaches these tasks (asyncio's own included).

        Returns:
            An event set once done, or ``None`` when there was nothing to do.
        """
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
                        await self.endpoints.cancel(generation_id)
                        # No event announces a cancellation: the row settles the handle.
                        record = await self.endpoints.get_generation(generation_id)
                    except Exception as exc:
                        logger.info(
                            "could not cancel abandoned generation %s: %s", generation_id, exc
                        )
                        continue
                    logger.debug("cancelled abandoned generation %s", generation_id)
                    pending = self.pending.get(generation_id)
                    if pending is not None:
                        observe(pending, record)
        finally:
            done.set()
            self._background -= 1
            if not self._background and self._idle is not None:
                self._idle.set()

    # -- stats ----------------------------------------------------------------------------

    def stats(self) -> ClientStats:
        watcher = self.watcher
        stream = watcher if isinstance(watcher, EventWatcher) else None
        poller = stream.poller if stream is not None else watcher
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
    """Ends every pending generation at its deadline: one task and one heap for them all.

    So a generation awaited without a timeout needs no timer (and no cancel scope) of its own:
    with 10,000 awaited at once, those were most of what each one cost. An entry is the due
    time and the id (the generation is looked up in ``pending`` when due, so a finished one is
    not kept alive); entries of finished generations are dropped when due, or all at once when
    they come to outnumber the pending generations.
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
                generation = self._pending.get(generation_id)
                if generation is not None:
                    expire_if_due(generation)  # not due if the id was reattached since
            self._wake = anyio.Event()
            with anyio.move_on_after(heap[0][0] - now if heap else math.inf):
                await self._wake.wait()


class _OutcomeWriter:
    """Records each generation's final status in a shared ledger, from one background task.

    ``note`` is a done callback (synchronous); writes are blocking I/O done in turn by
    :meth:`run`, so watchers never wait on the ledger.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._queue: list[tuple[str, str]] = []
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
            if not self._queue:
                self._wake = anyio.Event()
                await self._wake.wait()
            while self._queue:
                batch, self._queue = self._queue, []
                for generation_id, status in batch:
                    try:
                        await self._ledger.record_outcome(generation_id, status)
                    except LedgerError as exc:
                        logger.warning(
                            "the ledger did not take %s's outcome: %s", generation_id, exc
                        )
            if self._idle is not None:
                self._idle.set()

    async def drain(self) -> None:
        """Wait until every noted outcome is written."""
        if self._idle is not None:
            await self._idle.wait()
