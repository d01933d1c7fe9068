"""What every completion watcher is, what it may ask of the API, and how its tasks are kept.

Watchers run in the client's task group, which the user's ``async with AsyncClient()`` block
(a FastAPI app's lifespan, say) encloses: an exception escaping one of their tasks would cancel
that block. So every task they start is **supervised** (`supervised`): an unexpected
exception is logged, the generation it concerned fails with an ``OxenError``, and a loop that
serves every generation (the shared poller, the event stream) starts again after a pause.
"""

from __future__ import annotations

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

__all__ = ["QueueAPI", "Watcher", "look", "supervised", "unexpected"]

logger = logging.getLogger("oxen_queue")


class QueueAPI(Protocol):
    """The requests a watcher makes, each already retried per the client's policy."""

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        """``GET /api/ai/queue/{id}``: one full row."""
        ...

    async def active_statuses(self, model: str | None) -> dict[str, str]:
        """``GET /api/ai/queue[?model=]``: id -> status of every active row, parsed leanly."""
        ...

    def event_stream(self) -> AbstractAsyncContextManager[httpx.Response]:
        """``GET /api/events``: the open response, ready to be read as it arrives."""
        ...


class Watcher(Protocol):
    """A way of learning when generations finish. One per client, living in its task group."""

    def start(self, task_group: TaskGroup) -> None:
        """Start the background work, if any, in the client's task group."""
        ...

    async def ready(self) -> None:
        """Return once enqueueing is safe: an event stream must be open before the first job."""
        ...

    def track(self, generation: Generation, *, fresh: bool) -> None:
        """Watch a generation until it is done.

        Args:
            generation: The generation.
            fresh: ``True`` when it was enqueued a moment ago by this client; ``False`` when
                it was reattached by id and may have finished long ago.
        """
        ...

    def forget(self, generation: Generation) -> None:
        """Stop watching a generation that is done (told by the client, once)."""
        ...


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
    """Wrap a background task so that no exception escapes it into the client's task group.

    Args:
        name: What the task does, for the log.
        task: The task.
        on_error: Told of an unexpected exception (as an ``OxenError``): fail what it concerned.
        restart: Run the task again after an unexpected exception, after a pause that grows
            from 1 s to 30 s (a loop that serves every generation must not stop for good).
    """

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
    """Fetch one generation's row and settle it with what it says.

    A transient failure leaves the generation for the next look; a final one (404, a refused
    key) fails it. Nothing else escapes: an unexpected exception fails that generation alone.
    """
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
