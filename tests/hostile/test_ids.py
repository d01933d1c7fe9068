"""Ids from a hostile server never become paths (issue 14, "ids become paths").

The server names ``.``, ``..``, ``a/b``, ``x?y`` where a generation id belongs: in an enqueue's
answer, in list and history rows, in events. Whatever the client makes of them, the log of
every request it sent holds only the API's own paths, each id in them one plausible segment,
and no ``DELETE`` but of one generation. Nothing is sent twice for it either.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Final

import anyio
import pytest

from oxen_queue import (
    AmbiguousEnqueueError,
    APIResponseValidationError,
    AsyncClient,
    GenerationRecord,
)
from oxen_queue._ids import plausible_id

from .actions import mangle, sse
from .server import Action, Exchange, HostileServer
from .support import PROMPT, make_client, wait_until

pytestmark = pytest.mark.anyio

HOSTILE_IDS: Final = [".", "..", "a/b", "x?y", "%2e%2e", "a\r\nb"]
FIXED: Final = frozenset({"/api/ai/queue", "/api/ai/generations", "/api/ai/models", "/api/events"})
ITEMS: Final = frozenset({"/api/ai/queue", "/api/ai/generations", "/api/ai/models"})


def assert_only_safe_paths(server: HostileServer) -> None:
    """Every request was to a fixed path, or to one of them and one plausible id; a DELETE
    only ever to one generation; the key only ever to the API's origin."""
    assert server.log, "the test made no request at all"
    for entry in server.log:
        if entry.origin == "files":
            assert not entry.authorized, entry
            continue
        if entry.path in FIXED:
            assert entry.method != "DELETE", entry
            continue
        collection, _, last = entry.path.rpartition("/")
        assert collection in ITEMS and plausible_id(last), entry
        assert entry.method in ("GET", "DELETE"), entry
        assert entry.method == "GET" or collection == "/api/ai/queue", entry


def _json_reply(status: int, data: object) -> Action:
    body = json.dumps(data).encode()

    async def action(ex: Exchange) -> None:
        await ex.start(status, [(b"content-type", b"application/json")], len(body))
        await ex.body(body, more=False)

    return action


def enqueue_answer(generation_id: str) -> bytes:
    return json.dumps(
        {"generations": [{"generation_id": generation_id, "status": "queued"}]}
    ).encode()


def rows_plus(extra: list[dict[str, Any]]) -> Action:
    """The emulator's list, with ``extra`` rows appended."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        data = json.loads(captured.body)
        data["generations"] = [*data["generations"], *extra]
        await _json_reply(captured.status, data)(ex)

    return action


def rows_renamed(to: str) -> Action:
    """The emulator's list (or history page), each row's ``generation_id`` replaced by ``to``."""

    async def action(ex: Exchange) -> None:
        captured = await ex.emulator()
        data = json.loads(captured.body)
        for row in data.get("generations", []):
            row["generation_id"] = to
        await _json_reply(captured.status, data)(ex)

    return action


def answered_when(released: threading.Event, body: bytes) -> Action:
    """The emulator makes the job at once; ``body`` is answered once ``released`` is set."""

    async def action(ex: Exchange) -> None:
        await ex.emulator()
        while not released.is_set() and not ex.over():
            await anyio.sleep(0.01)  # polling: a threading.Event has nothing to await
        if not ex.over():
            await ex.start(200, [(b"content-type", b"application/json")], len(body))
            await ex.body(body, more=False)

    return action


async def enqueue_and_wait(client: AsyncClient, prompt: str) -> GenerationRecord:
    """One generation, to its end (an implausible id may fail either step)."""
    generation = await client.enqueue("gpt-image-2", prompt=prompt)
    return await generation


def completion_event(generation_id: str) -> bytes:
    payload = {"generation_id": generation_id, "status": "succeeded", "media_type": "image"}
    return f"event: media_generation_completed\ndata: {json.dumps(payload)}\n\n".encode()


@pytest.mark.parametrize("server_id", HOSTILE_IDS)
@pytest.mark.parametrize("completion", ["poll", "shared", "auto"])
async def test_an_enqueue_answered_with_an_implausible_id_fails_and_never_asks_about_it(
    server: HostileServer, server_id: str, completion: str
) -> None:
    server.on("POST", "/api/ai/queue", mangle(enqueue_answer(server_id)), times=1)
    async with make_client(server, completion=completion) as client:
        with anyio.fail_after(10), pytest.raises(APIResponseValidationError):
            await enqueue_and_wait(client, PROMPT)
        # The client goes on working for everything else.
        with anyio.fail_after(10):
            record = await client.generate("gpt-image-2", prompt=f"{PROMPT} 2")
    assert record.status == "succeeded"
    assert server.count("POST", "/api/ai/queue") == 2  # one each: nothing sent again
    assert_only_safe_paths(server)


async def test_a_generate_cancelled_before_its_implausible_id_arrives_never_deletes(
    server: HostileServer,
) -> None:
    """The abandoned job's cancellation (``cancel_upstream``) skips an id that cannot be a
    segment: no ``DELETE /api/ai/queue`` nor ``DELETE /api/ai``."""
    released = threading.Event()
    server.on("POST", "/api/ai/queue", answered_when(released, enqueue_answer(".")), times=1)
    async with make_client(server) as client:
        scope = anyio.CancelScope()

        async def caller() -> None:
            with scope:
                await client.generate("gpt-image-2", prompt=PROMPT)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(caller)
            assert await wait_until(lambda: server.count("POST", "/api/ai/queue") == 1, within=10)
            scope.cancel()
        released.set()  # answered after its caller was cancelled: an abandoned job
        posts = server.requests("POST", "/api/ai/queue")
        assert await wait_until(lambda: posts[0].ended is not None, within=10)
    # Leaving the client let what was in flight land, the abandoned jobs' cancels included.
    assert [entry for entry in server.log if entry.method == "DELETE"] == []
    assert_only_safe_paths(server)


async def test_list_rows_and_events_with_implausible_ids_are_skipped(
    server: HostileServer,
) -> None:
    """Shared polling reads rows whose ids are ``.``, ``..``, ``a/b``, ...; the event stream
    announces them: nothing is asked about them, and the client's own generations finish."""
    extra = [{"generation_id": i, "status": "queued"} for i in HOSTILE_IDS]
    server.on("GET", "/api/ai/queue", rows_plus(extra))
    events = b"".join(completion_event(i) for i in HOSTILE_IDS)
    server.on("GET", "/api/events", sse(events, then="emulator"))
    for completion in ("shared", "auto"):
        async with make_client(server, completion=completion) as client:
            with anyio.fail_after(10):
                generations = [
                    await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {completion} {i}")
                    for i in range(3)
                ]
                records = [await generation for generation in generations]
            listed = {row.generation_id for row in await client.list_queue()}
        assert all(record.status == "succeeded" for record in records)
        assert set(HOSTILE_IDS) <= listed  # a listing shows them, as data
    assert server.count("GET", "/api/ai/queue") >= 2  # the rows were read
    assert_only_safe_paths(server)


async def test_a_lost_answer_whose_rows_carry_an_implausible_id_is_not_sent_again(
    server: HostileServer,
) -> None:
    """Reconciliation keeps a row whose id cannot be a segment as evidence: the job exists,
    so the request is not sent again; it is never watched either."""
    server.on("POST", "/api/ai/queue", mangle(b'{"error": "bad gateway"}', status=502), times=1)
    server.on("GET", "/api/ai/queue", rows_renamed("a/b"))
    server.on("GET", "/api/ai/generations", rows_renamed("a/b"))
    async with make_client(server) as client:
        errors = (APIResponseValidationError, AmbiguousEnqueueError)
        with anyio.fail_after(20), pytest.raises(errors) as info:
            await enqueue_and_wait(client, PROMPT)
    if isinstance(info.value, AmbiguousEnqueueError):
        assert info.value.candidate_ids == ("a/b",)
    else:
        assert "'a/b'" in str(info.value)
    assert server.count("POST", "/api/ai/queue") == 1
    assert len(server.jobs) == 1
    assert_only_safe_paths(server)
