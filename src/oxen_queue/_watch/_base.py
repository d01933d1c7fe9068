"""What a completion watcher may ask of the API, how its tasks are kept, and the simplest one.

A watcher has ``start(task_group)`` (the client's), ``ready()`` (returns once enqueueing is
safe), ``track(generation, fresh=)`` (``fresh``: enqueued a moment ago by this client, not
reattached) and ``forget(generation)`` (the client's word that it is done). Watchers run in the
task group the user's ``async with AsyncClient()`` block encloses, where an exception would
cancel that block: so every task they start is `supervised`.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .._exceptions import OxenError
from .._generation import fail, observe
from .._retry import is_transient

if TYPE_CHECKING:
    import httpx
    from anyio.abc import TaskGroup

    from .._generation import Generation
    from .._models import GenerationRecord
    from .._poll import PollPolicy

__all__ = ["PollingWatcher", "QueueAPI", "look", "supervised", "unexpected"]

logger = logging.getLogger("oxen_queue")


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
        return
    except Exception as exc:
        fail(generation, unexpected(f"watching generation {generation.id}", exc))
        return
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

    async def ready(self) -> None:
        return None

    def forget(self, generation: Generation) -> None:
        return None  # its task sees it done at its next look

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
