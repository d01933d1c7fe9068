"""Malformed bodies (issue 9): one bad answer fails that request only, as a documented error.

Deep JSON, a 5,000-digit integer, NaN and Infinity literals, invalid UTF-8 and a body over the
8 MiB bound, from every endpoint the client reads: the direct read, the per-generation poller,
a reattached generation, the shared poller, the event stream and the enqueue answer. The
watchers treat them as transient: the generation resolves once the server answers properly,
and nothing escapes into the application's task group.
"""

from __future__ import annotations

import uuid

import anyio
import pytest

from oxen_queue import APIResponseValidationError, CompletionMode

from .actions import mangle, reply, sse
from .bodies import malformed_rows
from .server import Action, HostileServer
from .support import API_KEY, PROMPT, make_client, wait_until

pytestmark = pytest.mark.anyio

KINDS = list(malformed_rows("x"))


def malformed_answers(generation_id: str, status: str = "succeeded") -> list[Action]:
    """One reply per malformed kind, in order."""
    return [reply(200, body) for body in malformed_rows(generation_id, status).values()]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_malformed_row_raises_a_response_validation_error(
    server: HostileServer, kind: str
) -> None:
    async with make_client(server) as client:
        generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
        server.on("GET", "/api/ai/queue/{id}", reply(200, malformed_rows(generation.id)[kind]))
        with anyio.fail_after(10), pytest.raises(APIResponseValidationError):
            await client.get_generation(generation.id)


class Bystander:
    """A task of the application next to the client: it must never be cancelled."""

    def __init__(self) -> None:
        self.cancelled = False

    async def run(self) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


async def test_poll_mode_treats_malformed_rows_as_transient_and_nothing_escapes(
    server: HostileServer,
) -> None:
    """Generation A's first six reads are malformed; it then resolves, and B is untouched."""
    bad: set[str] = set()
    bystander = Bystander()
    server.on(
        "GET",
        "/api/ai/queue/{id}",
        *malformed_answers("x"),
        when=lambda path: path.rsplit("/", 1)[-1] in bad,
    )
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            group.start_soon(bystander.run)
            async with make_client(server, completion="poll") as client:
                a = await client.enqueue("gpt-image-2", prompt=f"{PROMPT} A")
                bad.add(a.id)
                b = await client.enqueue("gpt-image-2", prompt=f"{PROMPT} B")
                record_b = await b
                record_a = await a
            assert not bystander.cancelled
            group.cancel_scope.cancel()
    assert record_a.status == record_b.status == "succeeded"
    assert record_a.generation_id == a.id and record_a.result_url
    assert server.count("GET", f"/api/ai/queue/{a.id}") >= 7  # six bad answers, then the truth


@pytest.mark.parametrize("mode", ["auto", "shared", "poll"])
async def test_a_reattached_generation_survives_malformed_rows(
    server: HostileServer, mode: CompletionMode
) -> None:
    (job,) = server.add_jobs(API_KEY, 1)
    # Finished before the client exists: no event will tell (no replay), only its reads.
    assert await wait_until(lambda: job.status == "succeeded", within=5)
    server.on("GET", f"/api/ai/queue/{job.generation_id}", *malformed_answers(job.generation_id))
    bystander = Bystander()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            group.start_soon(bystander.run)
            async with make_client(server, completion=mode, backstop_interval=0.1) as client:
                record = await client.generation(job.generation_id)
            assert not bystander.cancelled
            group.cancel_scope.cancel()
    assert record.status == "succeeded"
    assert record.generation_id == job.generation_id


async def test_the_shared_poller_skips_a_malformed_tick_and_resolves_everything(
    server: HostileServer,
) -> None:
    server.on("GET", "/api/ai/queue", *malformed_answers("x"))
    async with make_client(server, completion="shared") as client:
        generations = [
            await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {i}") for i in range(3)
        ]
        with anyio.fail_after(20):  # a poller the bad tick ended would never resolve them
            records = [await generation for generation in generations]
    assert all(record.status == "succeeded" for record in records)
    assert server.count("GET", "/api/ai/queue") > len(KINDS)  # ticks went on after the bad ones


def malformed_events() -> list[bytes]:
    """One completion event per malformed kind, about a generation nobody waits for."""
    other = str(uuid.uuid4())
    return [
        b"event: media_generation_completed\ndata: " + body + b"\n\n"
        for body in malformed_rows(other, "succeeded").values()
    ]


@pytest.mark.parametrize("mode", ["events", "auto"])
async def test_a_malformed_event_is_skipped_and_later_events_still_resolve(
    server: HostileServer, mode: CompletionMode
) -> None:
    server.on("GET", "/api/events", sse(*malformed_events(), then="emulator"), times=1)
    # No backstop to speak of: only events can resolve these in time.
    async with make_client(server, completion=mode, backstop_interval=60.0) as client:
        generations = [
            await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {i}") for i in range(3)
        ]
        with anyio.fail_after(20):  # not the backstop's 60 s
            records = [await generation for generation in generations]
    assert all(record.status == "succeeded" for record in records)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_garbled_enqueue_answer_adopts_the_created_job_without_resending(
    server: HostileServer, kind: str
) -> None:
    server.on("POST", "/api/ai/queue", mangle(malformed_rows("x")[kind]), times=1)
    async with make_client(server) as client:
        with anyio.fail_after(10):
            generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
        assert list(server.jobs) == [generation.id]  # the one job created, adopted
        assert client.stats.resent == 0
        assert generation.id in client.pending or generation.done()
    assert server.count("POST", "/api/ai/queue") == 1
