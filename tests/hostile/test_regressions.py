"""What held against hostile servers before issue 9 and must keep holding.

Redirects of a result file (to ``file://``, in a loop, to the API origin: never with the
key), an unknown status ending at the deadline, a flood of unrelated events, a server
restarted without its jobs, ``aclose()`` with a thousand pending, and the key absent from
every log line, repr, error and traceback. (Size limits with no partial file left are in
``tests/test_download.py``; garbled enqueue answers adopted, not resent, in
``test_malformed.py``.)
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from oxen_queue import (
    AsyncClient,
    ClientClosedError,
    DownloadError,
    GenerationRecord,
    NotFoundError,
    OxenError,
    PollTimeoutError,
    RetryPolicy,
)
from oxen_queue.testing import Emulator, EmulatorConfig

from .actions import cut, mangle, redirect, reply, sse
from .bodies import StreamedBody
from .server import HostileServer
from .support import API_KEY, PROMPT, make_client

pytestmark = pytest.mark.anyio


def result(server: HostileServer) -> GenerationRecord:
    return GenerationRecord(
        generation_id="g",
        status="succeeded",
        result_url=f"{server.files_url}/files/ns/g.png?signature=x",
    )


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(lambda server: "file:///etc/passwd", id="file-scheme"),
        pytest.param(lambda server: f"{server.files_url}/files/ns/g.png?again=1", id="loop"),
    ],
)
async def test_a_result_file_redirected_to_a_file_url_or_in_a_loop_is_a_download_error(
    server: HostileServer, tmp_path: Path, location: object
) -> None:
    assert callable(location)
    server.on("GET", "/files/{ns}/{name}", redirect(location(server)), origin="files")
    async with make_client(server) as client:
        with anyio.fail_after(5), pytest.raises(DownloadError):
            await client.download(result(server), tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_a_result_file_redirected_to_the_api_never_carries_the_key(
    server: HostileServer, tmp_path: Path
) -> None:
    server.on(
        "GET",
        "/files/{ns}/{name}",
        redirect(f"{server.base_url}/api/ai/queue"),
        origin="files",
    )
    async with make_client(server) as client:
        before = len(server.log)
        with anyio.fail_after(5), pytest.raises(DownloadError):
            await client.download(result(server), tmp_path)  # the API refuses: no key
        sent = server.log[before:]
    assert [(entry.origin, entry.authorized) for entry in sent] == [
        ("files", False),
        ("api", False),
    ]


async def test_a_status_nobody_documented_ends_at_the_deadline_not_in_a_busy_loop(
    server: HostileServer,
) -> None:
    (job,) = server.add_jobs(API_KEY, 1)
    row = b'{"generation_id":"%s","status":"exploded"}' % job.generation_id.encode()
    server.on("GET", f"/api/ai/queue/{job.generation_id}", reply(200, row))
    async with make_client(server, completion="poll") as client:
        with anyio.fail_after(5), pytest.raises(PollTimeoutError):
            await client.generation(job.generation_id, deadline=0.5)
    assert server.count("GET", f"/api/ai/queue/{job.generation_id}") < 40  # backed off


def unrelated_flood(count: int = 10_000) -> StreamedBody:
    """``count`` unrelated events, a hundred per write, as fast as the socket takes them."""
    event = b'event: deployment_status_changed\ndata: {"deployment":"d","status":"ready"}\n\n'

    def chunks() -> Iterator[bytes]:
        for _ in range(count // 100):
            yield event * 100

    return chunks


async def test_a_flood_of_unrelated_events_does_not_hold_up_completions(
    server: HostileServer,
) -> None:
    server.on("GET", "/api/events", sse(unrelated_flood(), then="emulator"), times=1)
    async with make_client(server, completion="events") as client:
        generations = [
            await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {i}") for i in range(5)
        ]
        with anyio.fail_after(3):
            records = [await generation for generation in generations]
    assert all(record.status == "succeeded" for record in records)
    assert server.count("GET", "/api/events") == 1  # the stream never had to be reopened


async def test_a_server_restarted_without_its_jobs_fails_a_pending_generation_at_once() -> None:
    config = EmulatorConfig(time_scale=1.0)  # jobs run for seconds: still pending at restart
    first = Emulator(config=config)
    await anyio.to_thread.run_sync(first.start)
    port = int(first.base_url.rsplit(":", 1)[1])
    files_port = int(first.files_url.rsplit(":", 1)[1])
    second = Emulator(config=config, port=port, files_port=files_port)
    try:
        async with AsyncClient(
            api_key=API_KEY,
            base_url=first.base_url,
            retry=RetryPolicy(initial_delay=0.01, max_delay=0.05, deadline=5),
        ) as client:
            generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
            await anyio.to_thread.run_sync(first.stop)
            await anyio.to_thread.run_sync(second.start)
            # 0.1-0.9 s measured (the issue saw 0.3 s): the reconnection, after a jittered
            # backoff of up to 0.5 s, reconciles at once. The wrong behaviour waits for the
            # generation's deadline (an hour by default): a guard of 20 s tells them apart on any
            # machine.
            with anyio.fail_after(20), pytest.raises(NotFoundError):
                await generation
    finally:
        await anyio.to_thread.run_sync(first.stop)
        await anyio.to_thread.run_sync(second.stop)


async def test_aclose_with_a_thousand_pending_is_immediate(server: HostileServer) -> None:
    server.state.time_scale = 5.0  # nothing finishes during the test
    async with make_client(server, completion="auto", max_concurrency=64) as client:
        with anyio.fail_after(20):
            generations = []
            async with anyio.create_task_group() as group:

                async def enqueue(i: int) -> None:
                    generations.extend(
                        await client.enqueue_many("gpt-image-2", 4, prompt=f"{PROMPT} {i}")
                    )

                for i in range(250):
                    group.start_soon(enqueue, i)
        assert len(client.pending) == 1000
        before = len(server.requests())
        # 0.002-0.006 s measured. What a slow close would do is wait for the jobs (12 s and
        # more at this time scale) or talk to the server per generation: the guard is far
        # below the one and the request count rules out the other, on any machine.
        with anyio.fail_after(10):
            await client.aclose()
        # Nothing is sent to close: no cancellation, no request per generation. A watcher's
        # request already under way when close began may still be logged (CI saw one).
        during = server.requests()[before:]
        assert [r for r in during if r.method == "DELETE"] == []
        assert len(during) <= 2, during
    for generation in generations:
        with pytest.raises(ClientClosedError):
            generation.result()


async def test_the_key_never_shows_in_logs_reprs_errors_or_tracebacks(
    server: HostileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile run-through: refusals, retries, cut and garbled answers, redirects."""
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    server.on("POST", "/api/ai/queue", cut(), mangle(b"{not json"), reply(401, b"{}"))
    server.on("GET", "/api/ai/models/{id}", reply(500, b"<html>oops</html>"))
    server.on(
        "GET", "/files/{ns}/{name}", redirect(f"{server.base_url}/api/ai/queue"), origin="files"
    )
    errors: list[BaseException] = []
    async with make_client(
        server, retry=RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, deadline=5)
    ) as client:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: client.enqueue("gpt-image-2", prompt=f"{PROMPT} cut"),
            lambda: client.enqueue("gpt-image-2", prompt=f"{PROMPT} garbled"),
            lambda: client.enqueue("gpt-image-2", prompt=f"{PROMPT} refused"),
            lambda: client.get_model("black-forest-labs-flux-2-klein-4b"),
            lambda: client.get_generation("no-such-generation"),
            lambda: client.download(result(server), tmp_path),
        ]
        with anyio.fail_after(20):
            for call in calls:
                try:
                    await call()
                except OxenError as exc:
                    errors.append(exc)
        shown = repr(client) + repr(vars(client))
    assert len(errors) >= 4
    logged = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    tracebacks = "".join("".join(traceback.format_exception(e)) for e in errors)
    texts = [f"{e!s} {e!r} {vars(e)!r}" for e in errors]
    assert API_KEY not in logged
    assert API_KEY not in tracebacks
    assert all(API_KEY not in text for text in texts)
    assert API_KEY not in shown
