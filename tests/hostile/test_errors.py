"""Errors outside the tree (issue 9): whatever a server does ends as a documented error.

Closing the client under an enqueue in flight, a result URL that is not a usable URL, and an
id too long to be a file name: each fails (or succeeds) on the one request it concerns, as an
``OxenError``, and a malformed result URL never becomes a request to the API with the key.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from oxen_queue import AsyncClient, ClientClosedError, DownloadError, Generation, GenerationRecord

from .actions import delayed, reply
from .server import HostileServer
from .support import PROMPT, make_client, wait_until

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 1024


async def enqueue_then_close(server: HostileServer) -> BaseException | Generation:
    """Close the client while an enqueue is in flight (its job already created)."""
    server.on("POST", "/api/ai/queue", delayed(0.5))
    outcome: list[BaseException | Generation] = []

    async def enqueue(client: AsyncClient) -> None:
        try:
            outcome.append(await client.enqueue("gpt-image-2", prompt=PROMPT))
        except Exception as exc:
            outcome.append(exc)

    # The enqueue runs in a task group opened before the client, so the task that opened
    # the client closes it at the same nesting.
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group, make_client(server) as client:
            group.start_soon(enqueue, client)
            assert await wait_until(lambda: len(server.jobs) == 1, within=2)
            await client.aclose()
    (result,) = outcome
    return result


async def test_closing_the_client_under_an_enqueue_raises_client_closed(
    server: HostileServer,
) -> None:
    outcome = await enqueue_then_close(server)
    assert isinstance(outcome, ClientClosedError), repr(outcome)


async def test_client_closed_under_an_enqueue_names_the_job_it_created(
    server: HostileServer,
) -> None:
    outcome = await enqueue_then_close(server)
    assert isinstance(outcome, ClientClosedError), repr(outcome)
    ids = getattr(outcome, "generation_ids", None)
    assert ids == tuple(server.jobs)


URLS = {
    "port-99999": "http://127.0.0.1:99999/x.png",
    "nul": "http://files.example/x\x00.png",
    "no-host": "http:///api/ai/models",
    "ftp": "ftp://files.example/x.png",
    "relative": "/api/ai/models",
    "relative-no-slash": "api/ai/models",
}


@pytest.mark.parametrize(
    ("anyio_backend", "url"),
    [
        pytest.param(backend, url, id=f"{backend}-{name}")
        for name, url in URLS.items()
        for backend in ("asyncio", "trio")
    ],
)
async def test_a_malformed_result_url_is_a_download_error_and_sends_no_key(
    server: HostileServer, tmp_path: Path, url: str
) -> None:
    record = GenerationRecord(generation_id="g", status="succeeded", result_url=url)
    async with make_client(server) as client:
        before = len(server.log)
        with anyio.fail_after(5), pytest.raises(DownloadError):
            await client.download(record, tmp_path)
        sent = server.log[before:]
    assert [entry for entry in sent if entry.authorized] == []
    assert list(tmp_path.iterdir()) == []


async def test_a_300_character_id_downloads_to_a_safe_shortened_name(
    server: HostileServer, tmp_path: Path
) -> None:
    server.on(
        "GET", "/files/{ns}/{name}", reply(200, PNG, content_type="image/png"), origin="files"
    )
    generation_id = "a1b2c3-" * 43  # 301 characters, each one safe in a file name
    record = GenerationRecord(
        generation_id=generation_id,
        status="succeeded",
        result_url=f"{server.files_url}/files/ns/x.png?signature=x",
    )
    async with make_client(server) as client:
        with anyio.fail_after(5):
            path = await client.download(record, tmp_path)
    assert path.parent == tmp_path
    assert len(path.name.encode()) <= 255
    assert path.suffix == ".png"
    assert path.read_bytes() == PNG


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_aclose_from_a_task_group_inside_the_client_block_closes_cleanly(
    server: HostileServer, backend: str
) -> None:
    """Not in issue 9's list, found writing it: ``aclose()`` called from inside a task group
    nested in the client's ``async with`` block. Run in its own event loop: on trio the
    failure corrupts the cancel-scope stack of the whole run."""
    server.on("POST", "/api/ai/queue", delayed(0.5))
    outcome: list[BaseException | Generation] = []

    async def enqueue(client: AsyncClient) -> None:
        try:
            outcome.append(await client.enqueue("gpt-image-2", prompt=PROMPT))
        except Exception as exc:
            outcome.append(exc)

    async def scenario() -> None:
        with anyio.fail_after(10):
            async with make_client(server) as client, anyio.create_task_group() as group:
                group.start_soon(enqueue, client)
                assert await wait_until(lambda: len(server.jobs) == 1, within=2)
                await client.aclose()

    anyio.run(scenario, backend=backend)
    (result,) = outcome
    assert isinstance(result, ClientClosedError), repr(result)
