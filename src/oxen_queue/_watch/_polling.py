"""Per-generation backoff polling: ``GET /api/ai/queue/{id}`` on each job's own timer.

The simplest strategy and the fallback of the others. Each generation gets a small supervised
task that polls with [`PollPolicy`][oxen_queue.PollPolicy]'s backoff until the status is final.
Transient failures (already retried by the session, or a malformed answer) never fail the
generation: the next poll simply comes later. Only an answer that will not change by asking again
(404, 401/403) ends it with that error.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import anyio

from .._generation import fail
from ._base import look, supervised

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._generation import Generation
    from .._poll import PollPolicy
    from ._base import QueueAPI

__all__ = ["PollingWatcher"]


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

    def forget(self, generation: Generation) -> None:
        return None  # its task sees it done at its next look

    def track(self, generation: Generation, *, fresh: bool) -> None:
        assert self._task_group is not None, "start() comes first"

        async def poll() -> None:
            await self._poll(generation, fresh)

        self._task_group.start_soon(
            supervised(
                f"polling generation {generation.id}",
                poll,
                on_error=lambda error: fail(generation, error),
            )
        )

    async def _poll(self, generation: Generation, fresh: bool) -> None:
        policy = self._policy
        started = anyio.current_time()
        attempt = 0 if fresh else -1  # a reattached generation is asked about at once
        while not generation.done():
            if attempt >= 0:
                delay = policy.delay(
                    attempt, elapsed=anyio.current_time() - started, rand=random.random()
                )
                await anyio.sleep(delay)
            attempt += 1
            if generation.done():
                return
            await look(self._api, generation)
