"""Unbounded input (issue 9): a huge line or body costs bounded memory and fails one request.

Measured with ``tracemalloc`` in this process (the server thread's allocations included: it
streams its 100 MB in 64 KiB chunks and holds none of it). The bounds the client keeps: API
JSON bodies 8 MiB, SSE lines 1 MiB (a longer line is skipped without being buffered).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import anyio
import pytest

from oxen_queue import APIResponseValidationError

from .actions import reply, sse
from .bodies import MIB, huge_json_row, huge_sse_line
from .server import HostileServer
from .support import PROMPT, make_client

pytestmark = pytest.mark.anyio

MEMORY_BOUND = 20 * MIB


@pytest.fixture
def memory() -> Iterator[None]:
    """Trace allocations for the test (``tracemalloc.get_traced_memory()[1]`` is the peak)."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def peak() -> int:
    return tracemalloc.get_traced_memory()[1]


@pytest.mark.usefixtures("memory")
async def test_a_100_mb_event_line_is_skipped_in_bounded_memory(server: HostileServer) -> None:
    server.on("GET", "/api/events", sse(huge_sse_line(), then="emulator"), times=1)
    async with make_client(server, completion="events") as client:
        tracemalloc.reset_peak()
        generations = [
            await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {i}") for i in range(3)
        ]
        with anyio.fail_after(30):
            records = [await generation for generation in generations]
        used = peak()
    assert all(record.status == "succeeded" for record in records)  # later events still work
    assert used < MEMORY_BOUND, f"peak {used / MIB:.0f} MiB"


@pytest.mark.usefixtures("memory")
async def test_a_100_mb_json_answer_is_refused_in_bounded_memory(server: HostileServer) -> None:
    async with make_client(server) as client:
        generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
        server.on("GET", f"/api/ai/queue/{generation.id}", reply(200, huge_json_row(generation.id)))
        tracemalloc.reset_peak()
        with anyio.fail_after(30), pytest.raises(APIResponseValidationError):
            await client.get_generation(generation.id)
        used = peak()
    assert used < MEMORY_BOUND, f"peak {used / MIB:.0f} MiB"
