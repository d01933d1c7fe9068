"""Native cancellation (issue 9): a caller cancelled mid-enqueue orphans no job upstream.

However the caller is cancelled (asyncio's ``task.cancel()``, ``asyncio.wait_for``,
``asyncio.timeout``, anyio scopes, trio's scopes and nurseries), a job whose enqueue was in
flight ends cancelled upstream when ``generate()`` owned it, and registered with the client
(``client.pending``) when plain ``enqueue()`` made it. The enqueue answer is held back until
the callers have been cancelled (the job is created at once), so every cancellation lands while
a POST is in flight, however slow the machine; jobs run slowly, so none can finish before the
client could cancel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
import trio

from oxen_queue import AsyncClient

from ..helpers import WITHIN
from .server import Exchange, HostileServer
from .support import PROMPT, make_client, wait_until

pytestmark = pytest.mark.anyio

# Seconds before a caller is cancelled by a timeout or a scope: its POSTs are sent in
# milliseconds, and their answers held back until released, so this only has to be longer
# than sending them takes on a machine at its limit.
CANCEL_AFTER = 1.0
ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])
TRIO = pytest.mark.parametrize("anyio_backend", ["trio"])
SHIELD_BYPASSED = "asyncio's native cancellation goes through the enqueue's shield"


def slow_enqueues(server: HostileServer) -> threading.Event:
    """Each enqueue creates its job at once and is answered once the event returned is set
    (:func:`orphans` sets it); jobs take two minutes or more, so only a cancel ends them."""
    server.state.time_scale = 50.0
    released = threading.Event()

    async def held(ex: Exchange) -> None:
        captured = await ex.emulator()
        async with ex.watching():
            while not released.is_set() and not ex.over():
                await ex.hold(0.01)  # polling: a threading.Event has nothing to await
        if not ex.over():
            await ex.start(captured.status, captured.headers, len(captured.body))
            await ex.body(captured.body, more=False)

    server.on("POST", "/api/ai/queue", held)
    return released


async def orphans(server: HostileServer, answers: threading.Event) -> list[str]:
    """Once the held answers have been let go and have landed: the jobs not cancelled
    upstream (none due)."""
    answers.set()
    settled = await wait_until(
        lambda: (
            not server.active_jobs()
            and all(entry.ended is not None for entry in server.requests("POST", "/api/ai/queue"))
        ),
        within=WITHIN,
    )
    assert settled, "the late answers did not land, or the jobs were not cancelled"
    return [job.generation_id for job in server.jobs.values() if job.status != "cancelled"]


async def generate(client: AsyncClient, i: int) -> None:
    await client.generate("gpt-image-2", prompt=f"{PROMPT} {i}")


@ASYNCIO
async def test_asyncio_wait_for_on_generate_orphans_no_job(server: HostileServer) -> None:
    answers = slow_enqueues(server)
    async with make_client(server) as client:
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(generate(client, i), CANCEL_AFTER) for i in range(10)),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
        assert await orphans(server, answers) == []
    assert len(server.jobs) == 10


@ASYNCIO
async def test_asyncio_timeout_on_generate_orphans_no_job(server: HostileServer) -> None:
    answers = slow_enqueues(server)

    async def within_timeout(client: AsyncClient, i: int) -> None:
        async with asyncio.timeout(CANCEL_AFTER):
            await generate(client, i)

    async with make_client(server) as client:
        outcomes = await asyncio.gather(
            *(within_timeout(client, i) for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
        assert await orphans(server, answers) == []
    assert len(server.jobs) == 10


@ASYNCIO
async def test_task_cancel_of_100_generates_mid_post_orphans_no_job(
    server: HostileServer,
) -> None:
    answers = slow_enqueues(server)
    async with make_client(server, max_concurrency=32) as client:
        tasks = [asyncio.create_task(generate(client, i)) for i in range(100)]
        assert await wait_until(lambda: server.count("POST", "/api/ai/queue") >= 32, within=WITHIN)
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
        assert await orphans(server, answers) == []
    assert len(server.jobs) >= 32  # every POST in flight had created its job


async def test_anyio_move_on_after_on_generate_orphans_no_job(server: HostileServer) -> None:
    answers = slow_enqueues(server)

    async def within_scope(client: AsyncClient, i: int) -> None:
        with anyio.move_on_after(CANCEL_AFTER):
            await generate(client, i)

    async with make_client(server) as client:
        async with anyio.create_task_group() as group:
            for i in range(10):
                group.start_soon(within_scope, client, i)
        assert await orphans(server, answers) == []
    assert len(server.jobs) == 10


@TRIO
async def test_trio_move_on_after_on_generate_orphans_no_job(server: HostileServer) -> None:
    answers = slow_enqueues(server)

    async def within_scope(client: AsyncClient, i: int) -> None:
        with trio.move_on_after(CANCEL_AFTER):
            await generate(client, i)

    async with make_client(server) as client:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(within_scope, client, i)
        assert await orphans(server, answers) == []
    assert len(server.jobs) == 10


@TRIO
async def test_a_cancelled_trio_nursery_of_generates_orphans_no_job(
    server: HostileServer,
) -> None:
    answers = slow_enqueues(server)
    async with make_client(server) as client:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(generate, client, i)
            await wait_until(lambda: server.count("POST", "/api/ai/queue") == 10, within=WITHIN)
            nursery.cancel_scope.cancel()
        assert await orphans(server, answers) == []
    assert len(server.jobs) == 10


async def _enqueue_cancelled_mid_post(
    server: HostileServer, cancel: Callable[[AsyncClient], Awaitable[None]]
) -> None:
    answers = slow_enqueues(server)
    async with make_client(server) as client:
        await cancel(client)
        assert await wait_until(lambda: len(server.jobs) == 1, within=WITHIN)
        (job_id,) = server.jobs
        answers.set()
        # Registered with the client, not orphaned: watched, and reattachable by id.
        registered = await wait_until(lambda: job_id in client.pending, within=WITHIN)
        assert registered, f"job {job_id} was created but the client does not know it"


@ASYNCIO
async def test_enqueue_cancelled_mid_post_by_task_cancel_still_registers_its_job(
    server: HostileServer,
) -> None:
    async def cancel(client: AsyncClient) -> None:
        task = asyncio.create_task(client.enqueue("gpt-image-2", prompt=PROMPT))
        assert await wait_until(lambda: server.count("POST", "/api/ai/queue") == 1, within=WITHIN)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await _enqueue_cancelled_mid_post(server, cancel)


async def test_enqueue_cancelled_mid_post_by_a_cancel_scope_still_registers_its_job(
    server: HostileServer,
) -> None:
    async def cancel(client: AsyncClient) -> None:
        with anyio.move_on_after(CANCEL_AFTER):
            await client.enqueue("gpt-image-2", prompt=PROMPT)

    await _enqueue_cancelled_mid_post(server, cancel)


# -- the same guarantees for a client used without `async with` (issue 16) -------------------
#
# Its first calls open it (one of them does; the others wait), and its background work runs
# in a task the event loop owns: cancelling the callers must reach neither.


@contextlib.asynccontextmanager
async def never_entered(server: HostileServer) -> AsyncIterator[AsyncClient]:
    client = make_client(server)
    try:
        yield client
    finally:
        await client.aclose()


@ASYNCIO
async def test_asyncio_wait_for_on_the_first_calls_of_a_client_never_entered_orphans_no_job(
    server: HostileServer,
) -> None:
    answers = slow_enqueues(server)
    async with never_entered(server) as client:
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(generate(client, i), CANCEL_AFTER) for i in range(10)),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
        assert await orphans(server, answers) == []
        assert "open" in repr(client)  # the callers' cancellation did not close it
    assert len(server.jobs) == 10


@ASYNCIO
async def test_task_cancel_of_the_first_generates_of_a_client_never_entered_orphans_no_job(
    server: HostileServer,
) -> None:
    answers = slow_enqueues(server)
    async with never_entered(server) as client:
        tasks = [asyncio.create_task(generate(client, i)) for i in range(20)]
        assert await wait_until(lambda: server.count("POST", "/api/ai/queue") >= 1, within=5)
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
        assert await orphans(server, answers) == []
        server.state.time_scale = 0.01  # a job of a second or so, no longer minutes
        await generate(client, 20)  # still open, and its background work still runs


async def test_anyio_move_on_after_on_a_client_never_entered_orphans_no_job(
    server: HostileServer,
) -> None:
    answers = slow_enqueues(server)

    async def within_scope(client: AsyncClient, i: int) -> None:
        with anyio.move_on_after(CANCEL_AFTER):
            await generate(client, i)

    async with never_entered(server) as client:
        async with anyio.create_task_group() as group:
            for i in range(10):
                group.start_soon(within_scope, client, i)
        assert await orphans(server, answers) == []
    # A call whose timer fires before its POST leaves (the open comes first) makes no job,
    # which is no orphan either; most were in flight.
    assert len(server.jobs) >= 1


@TRIO
async def test_a_cancelled_trio_nursery_of_first_generates_of_a_client_never_entered_orphans_no_job(
    server: HostileServer,
) -> None:
    answers = slow_enqueues(server)
    async with never_entered(server) as client:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(generate, client, i)
            # POSTs in flight (the first call opened the client meanwhile), then cancel. Their
            # answers are held, so the enqueuer's opening bound decides how many leave at once.
            assert await wait_until(lambda: server.count("POST", "/api/ai/queue") >= 1, within=5)
            nursery.cancel_scope.cancel()
        assert await orphans(server, answers) == []
        assert "open" in repr(client)
    assert len(server.jobs) == server.count("POST", "/api/ai/queue")
