"""Reconciliation against a hostile history (issue 9): every look is bounded.

When an enqueue's answer is lost after the job was created, the client looks the job up,
paging through the history. A history listed oldest first, behind a thousand older rows of
the same model, must still be read in a bounded number of pages, and lookups that keep
failing end as ``AmbiguousEnqueueError`` within the retry deadline. Nothing is resent.
"""

from __future__ import annotations

import time

import anyio
import pytest

from oxen_queue import AmbiguousEnqueueError, RetryPolicy

from .actions import cut, oldest_first_history, reply
from .server import HostileServer
from .support import API_KEY, PROMPT, make_client

pytestmark = pytest.mark.anyio

DEADLINE = 1.0
ESCAPE = 30  # history reads after which the server refuses more (only a runaway gets there)


def older_rows(server: HostileServer, count: int) -> None:
    """``count`` rows of the same model from the last hour, oldest first."""
    now = time.time()
    for i, job in enumerate(server.add_jobs(API_KEY, count)):
        job.enqueued_at = now - 3600 + i
        job.changed()


async def test_a_lost_answer_is_adopted_from_an_oldest_first_history_in_few_pages(
    server: HostileServer,
) -> None:
    older_rows(server, 1000)
    server.on("POST", "/api/ai/queue", cut(), times=1)
    server.on("GET", "/api/ai/generations", oldest_first_history(), times=ESCAPE)
    server.on("GET", "/api/ai/generations", reply(404, b'{"error":{"message":"enough"}}'))
    retry = RetryPolicy(initial_delay=0.01, max_delay=0.05, deadline=DEADLINE)
    async with make_client(server, retry=retry) as client:
        started = anyio.current_time()
        with anyio.fail_after(DEADLINE + 5):
            generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
        elapsed = anyio.current_time() - started
        mine = [job.generation_id for job in server.jobs.values() if job.prompt == PROMPT]
        assert mine == [generation.id]  # adopted
    assert server.count("GET", "/api/ai/generations") < 20
    assert server.count("POST", "/api/ai/queue") == 1  # never resent
    assert elapsed < DEADLINE + 5  # a thousand rows, paged from the oldest: seconds at least


async def test_a_lost_answer_whose_lookups_keep_failing_is_ambiguous_within_the_deadline(
    server: HostileServer,
) -> None:
    server.on("POST", "/api/ai/queue", cut(), times=1)
    failing = reply(500, b'{"error":{"message":"lookup failed"}}')
    server.on("GET", "/api/ai/queue", failing)
    server.on("GET", "/api/ai/generations", failing)
    # Attempts without number: only the deadline can end the lookups.
    retry = RetryPolicy(attempts=10_000, initial_delay=0.01, max_delay=0.05, deadline=DEADLINE)
    async with make_client(server, retry=retry) as client:
        started = anyio.current_time()
        with anyio.fail_after(DEADLINE + 5), pytest.raises(AmbiguousEnqueueError):
            await client.enqueue("gpt-image-2", prompt=PROMPT)
        elapsed = anyio.current_time() - started
    assert len(server.jobs) == 1
    assert server.count("POST", "/api/ai/queue") == 1  # never resent
    assert elapsed < DEADLINE + 5  # not the 10,000 attempts' minutes
