"""Per-generation backoff polling: ``GET /api/ai/queue/{id}`` on each job's own timer.

The simplest strategy and the fallback of the others. Each generation gets a small task that
polls with :class:`PollPolicy`'s backoff until the status is final. Transient failures (already
retried by the session) never fail the generation: the next poll simply comes later. Only an
answer that will not change by asking again (404, 401/403) ends it with that error.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import anyio

from .._exceptions import APIError, APIStatusError, OxenError
from .._retry import is_retryable

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._generation import Generation
    from .._poll import PollPolicy
    from ._base import QueueAPI

__all__ = ["PollingWatcher", "is_transient"]

logger = logging.getLogger("oxen_queue")


def is_transient(exc: OxenError) -> bool:
    """Whether asking again later may well succeed (so the generation must not fail of it)."""
    if isinstance(exc, APIStatusError):
        return is_retryable(exc)
    # A connection failure, a timeout, or a malformed answer (a proxy's page): ask again.
    return isinstance(exc, APIError)


class PollingWatcher:
    """Polls each generation on its own backoff timer."""

    def __init__(self, api: QueueAPI, policy: PollPolicy) -> None:
        self._api = api
        self._policy = policy
        self._task_group: TaskGroup | None = None

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group

    async def ready(self) -> None:
        return None

    def track(self, generation: Generation, *, fresh: bool) -> None:
        assert self._task_group is not None, "start() comes first"
        self._task_group.start_soon(self._poll, generation, fresh)

    async def _poll(self, generation: Generation, fresh: bool) -> None:
        policy = self._policy
        started = anyio.current_time()
        attempt = 0 if fresh else -1  # a reattached generation is asked about at once
        while not generation.done():
            if attempt >= 0:
                delay = policy.delay(
                    attempt, elapsed=anyio.current_time() - started, rand=random.random()
                )
                await anyio.sleep(min(delay, max(generation._remaining(), 0.0)))
            attempt += 1
            if generation.done():
                return
            if generation._expired():
                generation._expire()
                return
            try:
                record = await self._api.get_generation(generation.id)
            except OxenError as exc:
                if is_transient(exc):
                    logger.debug("poll of %s failed (%s); will ask again", generation.id, exc)
                    continue
                generation._fail(exc)
                return
            generation._observe(record)
