"""Slow bodies (issue 9): a server sending a byte a second cannot hold a request open.

A download is abandoned once it stalls (``stall_timeout``), an enqueue answer once the whole
attempt outlasts the client's ``timeout`` (then reconciled, never resent), and downloads run
under their own bound (``max_downloads``), never taking the API's request slots.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from oxen_queue import AsyncClient, DownloadError, GenerationRecord

from .actions import trickle
from .server import HostileServer, Logged
from .support import PROMPT, make_client, wait_until

pytestmark = pytest.mark.anyio

STALL = 1.0
PNG_HEAD = b"\x89PNG\r\n\x1a\n"


def result(server: HostileServer, name: str = "g") -> GenerationRecord:
    """A finished record whose file lives on the server's file origin."""
    return GenerationRecord(
        generation_id=name,
        status="succeeded",
        result_url=f"{server.files_url}/files/ns/{name}.png?signature=x",
    )


def slow_files(server: HostileServer, *, size: int, seconds: float) -> None:
    """Every result file: ``size`` bytes spread evenly over ``seconds`` (never stalled)."""
    step = max(1, size // 20)
    body = (PNG_HEAD + b"\x00" * size)[:size]
    server.on(
        "GET", "/files/{ns}/{name}", trickle(size / seconds, body=body, step=step), origin="files"
    )


def peak_overlap(entries: list[Logged]) -> int:
    """The most of ``entries`` that were open at one instant."""
    edges = sorted(
        [(entry.started, 1) for entry in entries]
        + [(entry.ended if entry.ended is not None else float("inf"), -1) for entry in entries]
    )
    peak = current = 0
    for _, change in edges:
        current += change
        peak = max(peak, current)
    return peak


async def test_a_file_sent_at_one_byte_per_second_fails_after_the_stall_timeout(
    server: HostileServer, tmp_path: Path
) -> None:
    body = PNG_HEAD + b"\x00" * 1000
    server.on("GET", "/files/{ns}/{name}", trickle(1.0, body=body, for_at_most=30), origin="files")
    async with make_client(server, stall_timeout=STALL) as client:
        # The trickle lasts 30 s: a download that outlived the stall timeout would see it out.
        with anyio.fail_after(STALL + 15), pytest.raises(DownloadError):
            await client.download(result(server), tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file


async def test_an_enqueue_answer_sent_at_one_byte_per_second_is_cut_off_then_reconciled(
    server: HostileServer,
) -> None:
    """The whole attempt is bounded by ``timeout``; the job it created is adopted."""
    timeout = 1.2  # longer than the gap between two bytes: only a whole-attempt bound helps
    # The answer would take 30 s: a bound per read (not per attempt) lets it run that long.
    server.on("POST", "/api/ai/queue", trickle(1.0, for_at_most=30), times=1)
    async with make_client(server, timeout=timeout) as client:
        started = anyio.current_time()
        with anyio.fail_after(timeout + 20):
            generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
        elapsed = anyio.current_time() - started
        assert elapsed < timeout + 10
        assert list(server.jobs) == [generation.id]
        assert (client.stats.reconciled, client.stats.resent) == (1, 0)
    assert server.count("POST", "/api/ai/queue") == 1


async def test_slow_downloads_leave_the_request_slots_to_api_calls(
    server: HostileServer, tmp_path: Path
) -> None:
    slow_files(server, size=20_000, seconds=30.0)  # cancelled once the enqueue is through

    def files() -> list[Logged]:
        return server.requests("GET", "/files/{ns}/{name}", origin="files")

    # A long stall timeout: these downloads are slow, not stalled, and must go on.
    client = make_client(server, max_concurrency=2, stall_timeout=30.0)
    async with client, anyio.create_task_group() as group:
        for name in ("a", "b"):
            group.start_soon(client.download, result(server, name), tmp_path / name)
        assert await wait_until(lambda: len(files()) == 2, within=2)
        started = anyio.current_time()
        with anyio.fail_after(25):
            await client.enqueue("gpt-image-2", prompt=PROMPT)
        elapsed = anyio.current_time() - started
        in_progress = [entry for entry in files() if entry.ended is None]
        group.cancel_scope.cancel()
    assert len(in_progress) == 2  # both downloads were still running
    assert elapsed < 15  # not after a download's 30 s


@pytest.mark.parametrize(
    ("options", "count", "bound"),
    [
        pytest.param(
            {"max_downloads": 1},
            2,
            1,
            id="max_downloads=1",
        ),
        pytest.param(
            {},
            9,
            8,
            id="default-8",
        ),
    ],
)
async def test_downloads_run_under_their_own_bound(
    server: HostileServer, tmp_path: Path, options: dict[str, int], count: int, bound: int
) -> None:
    slow_files(server, size=2_000, seconds=0.5)
    client: AsyncClient
    async with make_client(server, max_concurrency=16, stall_timeout=30.0, **options) as client:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for i in range(count):
                    group.start_soon(client.download, result(server, f"g{i}"), tmp_path / f"{i}")
    assert len(list(tmp_path.iterdir())) == count
    files = server.requests("GET", "/files/{ns}/{name}", origin="files")
    assert await wait_until(lambda: all(entry.ended is not None for entry in files), within=1)
    assert peak_overlap(files) == bound
