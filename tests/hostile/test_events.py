"""A silent event stream (issue 9): open is not the same as alive.

The API documents a keep-alive every 15 s, yet a stream can stay open and deliver nothing:
keep-alives only, or not a byte after its headers. With generations pending, a stream
without an event for ``stall_timeout`` is reopened and reconciled. In ``auto`` mode, a stream
that never even answers delays the first enqueue only (up to its connect wait), never every
one, and polling still resolves the generations.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from .actions import hang, keepalives, sse
from .server import Action, HostileServer
from .support import PROMPT, make_client

pytestmark = pytest.mark.anyio

STALL = 1.0
CONNECT_WAIT = 10.0  # seconds the first enqueue may wait for the stream to open


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(sse(then=keepalives(0.2)), id="keep-alives-only"),
        pytest.param(sse(then="silent"), id="nothing-after-headers"),
    ],
)
async def test_a_silent_stream_is_reopened_after_the_stall_timeout_and_reconciled(
    server: HostileServer, stream: Action
) -> None:
    server.on("GET", "/api/events", stream)
    async with make_client(server, completion="events", stall_timeout=STALL) as client:
        generations = [
            await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {i}") for i in range(5)
        ]
        with anyio.fail_after(STALL + 1.5):
            records = [await generation for generation in generations]
    assert all(record.status == "succeeded" for record in records)
    assert server.count("GET", "/api/events") >= 2  # reopened


def test_a_stream_that_never_answers_delays_only_the_first_enqueue(server: HostileServer) -> None:
    """Ten enqueues in a row, in ``auto`` mode: the first may wait up to the connect wait,
    the others go at once, and polling resolves them all.

    The connect wait is 10 s on any backend, so asyncio and trio run side by side (each in
    its own thread and event loop, with its own client) rather than one after the other.
    """
    server.on("GET", "/api/events", hang())

    async def ten_enqueues() -> tuple[float, float]:
        # The default 30 s timeout: longer than the connect wait, as in production.
        client = make_client(server, completion="auto", timeout=30.0, backstop_interval=0.2)
        async with client:
            started = anyio.current_time()
            with anyio.fail_after(CONNECT_WAIT + 2):
                generations = [await client.enqueue("gpt-image-2", prompt=f"{PROMPT} 0")]
            first = anyio.current_time() - started
            with anyio.fail_after(2):
                generations += [
                    await client.enqueue("gpt-image-2", prompt=f"{PROMPT} {i}")
                    for i in range(1, 10)
                ]
            total = anyio.current_time() - started
            with anyio.fail_after(5):
                records = [await generation for generation in generations]
        assert all(record.status == "succeeded" for record in records)
        return first, total

    def run_on(backend: str) -> tuple[float, float]:
        return anyio.run(ten_enqueues, backend=backend)

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run_on, backend) for backend in ("asyncio", "trio")]
        timings = [run.result() for run in runs]
    for first, total in timings:
        assert first <= CONNECT_WAIT + 1
        assert total < 1.5 * CONNECT_WAIT


async def test_a_byte_order_mark_at_the_start_of_the_stream_hides_no_event(
    server: HostileServer,
) -> None:
    """A stream that starts with U+FEFF (EF BB BF), as the specification allows, then the
    emulator's events: the first completion event is read as such, so the generation is
    settled by it, with no stall, no reopening and no poll."""
    server.on("GET", "/api/events", sse(b"\xef\xbb\xbf"), times=1)
    async with make_client(server, completion="events", stall_timeout=60.0) as client:
        generation = await client.enqueue("gpt-image-2", prompt=PROMPT)
        with anyio.fail_after(30):  # a hang guard: without the fix it waits for the stall
            record = await generation
        assert client.stats.stream_stalls == 0
    assert record.status == "succeeded"
    assert server.count("GET", "/api/events") == 1
    assert server.count("GET", "/api/ai/queue/{id}") == 0
