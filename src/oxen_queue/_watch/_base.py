"""What every completion watcher is, and what it may ask of the API."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx
    from anyio.abc import TaskGroup

    from .._generation import Generation
    from .._models import GenerationRecord

__all__ = ["QueueAPI", "Watcher", "guarded"]

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
        """``GET /api/events``: the open response, ready to be read line by line."""
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


def guarded(
    name: str, loop: Callable[[], Awaitable[None]]
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Wrap a background loop so an unexpected error is logged, never raised into the host.

    A watcher's loops live in the client's task group; an exception escaping one would cancel
    the task that opened the client (a FastAPI app's lifespan, say).
    """

    async def run() -> None:
        try:
            await loop()
        except Exception:
            logger.exception("oxen_queue: %s stopped on an unexpected error", name)

    return run
