"""The base of the completion watchers, and the two that poll.

A watcher has ``start(task_group)`` (the client's), ``ready()`` (returns once enqueueing is
safe), ``track(generation, fresh=)`` (``fresh``: enqueued a moment ago by this client, not
reattached) and ``forget(generation)`` (the client's word that it is done). Watchers run in the
task group the user's ``async with AsyncClient()`` block encloses, where an exception would
cancel that block: so every task they start is `supervised`.

`SharedPollWatcher` asks ``GET /api/ai/queue`` once a tick for every pending generation: the
list holds the active (``queued``/``processing``) rows, so one request (one per model filter)
tells the state of all; one that has left it has finished, and its final row is fetched once.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio

from .._exceptions import OxenError
from .._generation import fail, note_status, observe, watch_subscriptions
from .._retry import is_transient

if TYPE_CHECKING:
    import httpx
    from anyio.abc import TaskGroup

    from .._generation import Generation
    from .._models import GenerationRecord
    from .._poll import PollPolicy

logger = logging.getLogger("oxen_queue")

_MAX_MODEL_FILTERS: Final = 3  # more distinct models than this: one unfiltered list instead
_LOOKS: Final = 32  # generations fetched at once after a tick (requests are bounded anyway)


class QueueAPI(Protocol):
    """The requests a watcher makes, each already retried per the client's policy."""

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        """``GET /api/ai/queue/{id}``: one full row."""

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        """``GET /api/ai/queue[?model=]``: id -> status of every active row, parsed leanly."""

    def event_stream(self) -> AbstractAsyncContextManager[httpx.Response]:
        """``GET /api/events``: the open response, ready to be read as it arrives."""


def unexpected(name: str, exc: Exception) -> OxenError:
    """Log an exception no code path expected, and the ``OxenError`` that reports it."""
    logger.error("oxen_queue: %s failed unexpectedly", name, exc_info=exc)
    error = OxenError(f"{name} failed unexpectedly: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def supervised(
    name: str,
    task: Callable[[], Awaitable[None]],
    *,
    on_error: Callable[[OxenError], None] | None = None,
    restart: bool = False,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """``task``, wrapped so that no exception escapes it into the client's task group: an
    unexpected one is logged as ``name``'s and told to ``on_error`` (to fail what it concerned);
    with ``restart``, the task runs again after a pause growing from 1 s to 30 s (a loop that
    serves every generation must not stop for good)."""

    async def run() -> None:
        pause = 1.0
        while True:
            try:
                await task()
                return
            except Exception as exc:
                error = unexpected(name, exc)
                if on_error is not None:
                    on_error(error)
                if not restart:
                    return
            await anyio.sleep(pause * (0.5 + random.random() / 2))
            pause = min(pause * 2, 30.0)

    return run


async def look(api: QueueAPI, generation: Generation) -> None:
    """Fetch one generation's row and settle it with what it says. A transient failure leaves
    it for the next look; a final one (404, a refused key) or an unexpected one fails it."""
    try:
        record = await api.get_generation(generation.id)
    except OxenError as exc:
        if is_transient(exc):
            logger.debug("look at %s failed (%s); will ask again", generation.id, exc)
        else:
            fail(generation, exc)
    except Exception as exc:
        fail(generation, unexpected(f"watching generation {generation.id}", exc))
    else:
        observe(generation, record)


class PollingWatcher:
    """Polls each generation (``GET /api/ai/queue/{id}``) in a task of its own, with
    [`PollPolicy`][oxen_queue.PollPolicy]'s backoff, until it is done."""

    def __init__(self, api: QueueAPI, policy: PollPolicy) -> None:
        self._api = api
        self._policy = policy
        self._task_group: TaskGroup | None = None

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group

    async def ready(self) -> None: ...

    def forget(self, generation: Generation) -> None: ...  # its task sees it done at its next look

    def track(self, generation: Generation, *, fresh: bool) -> None:
        assert self._task_group is not None, "start() comes first"
        self._task_group.start_soon(
            supervised(
                f"polling generation {generation.id}",
                functools.partial(self._poll, generation, fresh),
                on_error=functools.partial(fail, generation),
            )
        )

    async def _poll(self, generation: Generation, fresh: bool) -> None:
        started = anyio.current_time()
        attempt = 0 if fresh else -1  # a reattached generation is asked about at once
        while not generation.done():
            if attempt >= 0:
                elapsed = anyio.current_time() - started
                await anyio.sleep(
                    self._policy.delay(attempt, elapsed=elapsed, rand=random.random())
                )
            attempt += 1
            if not generation.done():
                await look(self._api, generation)


class SharedPollWatcher:
    """Tracks pending generations and settles them with one list request per tick, every
    ``interval`` seconds (or a function giving them, re-read every tick; ``math.inf`` pauses
    the ticks, and `tick` can still be called)."""

    def __init__(self, api: QueueAPI, *, interval: float | Callable[[], float] = 1.0) -> None:
        self._api = api
        self._interval = interval if callable(interval) else (lambda: interval)
        self.pending: dict[str, Generation] = {}
        self.watched: set[str] = set()  # ids of those someone follows with updates()
        self.ticks = 0
        # One bound method for every generation, not one per generation.
        self._on_subscribers = self._subscribers_changed
        self._task_group: TaskGroup | None = None
        self._wake: anyio.Event | None = None

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        task_group.start_soon(supervised("shared poller", self._loop, restart=True))

    async def ready(self) -> None: ...

    def track(self, generation: Generation, *, fresh: bool) -> None:
        assert self._task_group is not None, "start() comes first"
        self.pending[generation.id] = generation
        watch_subscriptions(generation, self._on_subscribers)
        if not fresh:
            # Reattached: it may have finished long ago and will never be in the active list.
            self._task_group.start_soon(look, self._api, generation)
        self.wake()

    def wake(self) -> None:
        """Make the loop re-read its interval now (after a change of mode, or new work)."""
        if self._wake is not None:
            self._wake.set()

    def forget(self, generation: Generation) -> None:
        if self.pending.get(generation.id) is generation:
            del self.pending[generation.id]
            self.watched.discard(generation.id)

    def _subscribers_changed(self, generation: Generation, watched: bool) -> None:
        if not watched:
            self.watched.discard(generation.id)
        elif self.pending.get(generation.id) is generation:
            if not self.watched:
                self.wake()  # the interval may be shorter now that someone watches
            self.watched.add(generation.id)

    async def _loop(self) -> None:
        # Ticks keep a fixed rate: the time a tick takes is not added to the interval.
        last = -math.inf
        while True:
            self._wake = anyio.Event()
            interval = self._interval() if self.pending else math.inf
            # (inf + -inf would be NaN: an idle or paused poller simply waits to be woken.)
            delay = math.inf if math.isinf(interval) else last + interval - anyio.current_time()
            with anyio.move_on_after(delay):
                await self._wake.wait()
                continue  # woken early: re-read the interval and the pending set
            last = anyio.current_time()
            await self.tick()

    async def tick(self) -> None:
        """Learn the state of every pending generation: one list, then one fetch per finisher.
        Never raises: a failed tick is logged, and the next one tells."""
        if not self.pending:
            return
        # Only generations known before the list is asked for can be judged by its absence.
        snapshot = list(self.pending.values())
        self.ticks += 1
        try:
            active = await self._active(snapshot)
        except OxenError as exc:
            if is_transient(exc):
                logger.debug("shared poll failed (%s); next tick will tell", exc)
            else:
                # A refused key will not be accepted next time either: say so to every waiter.
                for generation in snapshot:
                    fail(generation, exc)
            return
        except Exception as exc:
            unexpected("shared poll", exc)
            return
        for generation in snapshot:
            if generation.id in active:
                note_status(generation, active[generation.id])
        finished = [g for g in snapshot if not g.done() and g.id not in active]
        if finished:
            await self._look_all(finished)

    async def _look_all(self, generations: list[Generation]) -> None:
        """One look at each generation that left the active list, by `_LOOKS` workers that
        skip those done meanwhile: thousands can finish between two ticks, and the event
        stream is likely to settle them first."""
        remaining = iter(generations)

        async def worker() -> None:
            for generation in remaining:
                if not generation.done():
                    await look(self._api, generation)

        async with anyio.create_task_group() as task_group:
            for _ in range(min(_LOOKS, len(generations))):
                task_group.start_soon(worker)

    async def _active(self, generations: list[Generation]) -> dict[str, str]:
        models = {g.model for g in generations}
        if None in models or len(models) > _MAX_MODEL_FILTERS:
            return await self._api.active_statuses(None)
        active: dict[str, str] = {}
        for model in sorted(m for m in models if m is not None):
            active.update(await self._api.active_statuses(model))
        return active
